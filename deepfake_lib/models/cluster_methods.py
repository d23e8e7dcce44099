"""Finding the unique people among face encodings, and choosing the smaller data set.

Methods (``method=``), all on the 128-d face_recognition encodings:

- ``auto`` (the default): ``tsne_dbscan``, or below 50 faces (where t-SNE says little)
  HDBSCAN on the encodings themselves (DBSCAN when ``eps`` or ``min_samples`` is given).
  Chosen on the one set of real labelled faces here, the soccer photos (ARI 0.98,
  ``benchmarks/cluster.py``); on 21,000 and 120,000 encodings from
  :func:`synthetic_encodings` it scores ARI 0.997, but that generator is this module's
  own and no independent test of the choice.
- ``tsne_dbscan``: the seed's pipeline with eps from the data: PCA to 50 dimensions, a 2-D
  t-SNE (openTSNE, perplexity ``min(15, (n - 1) / 3)``, 125 + 250 iterations), then DBSCAN
  with eps at the knee of the k-distance curve and ``min_samples = max(clip(n // 20, 2, 5),
  n // 3000)``: a fixed min_samples fails at one end (at 120,000 faces 5 merges people, ARI
  0.88; at 960 faces 10 finds nobody), scaled with the data it keeps ARI >= 0.99.
- ``tsne_hdbscan``: the same embedding, HDBSCAN (no eps; collapsed to ARI 0.31 on a set with
  20% strays).
- ``dbscan``: DBSCAN on the raw encodings, eps from the k-distance knee (ARI 0.91 on soccer).
- ``hdbscan``: HDBSCAN on the raw encodings (ARI 0.94 on soccer).
- ``seed``: the seed's fixed pipeline, PCA 50, scikit-learn's 3-D t-SNE (perplexity 50), then
  DBSCAN(eps=1, min_samples=5). Kept for comparison: its eps does not transfer.

Labels are integers, ``-1`` for noise, clusters numbered by decreasing size; the cluster
stage turns them into ids derived from each cluster's members (:func:`content_ids`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from deepfake_lib.core.checks import SEED, above, at_least, validate

METHODS = ("auto", "tsne_hdbscan", "tsne_dbscan", "dbscan", "hdbscan", "seed")
MIN_FACES = 3
SMALL_N = 50  # below this many faces, cluster the encodings directly
# Faces closer than this are the same face: far below the distance between two frames of one
# person (0.1 and more), above the float32 rounding of a distance (about 1e-4).
SAME_FACE = 1e-3


@dataclass(frozen=True)
class ClusterParams:
    method: str = "auto"
    pca_components: int = field(default=50, metadata=at_least(1))
    # None: min(15, (n - 1) / 3)
    perplexity: float | None = field(default=None, metadata=above(0, optional=True))
    # HDBSCAN (which needs 2); None: max(clip(n // 20, 2, 5), n // 3000)
    min_cluster_size: int | None = field(default=None, metadata=at_least(2, optional=True))
    # DBSCAN; None: knee of the k-distance curve
    eps: float | None = field(default=None, metadata=above(0, optional=True))
    # DBSCAN; None: min_cluster_size
    min_samples: int | None = field(default=None, metadata=at_least(1, optional=True))
    seed: int = field(default=0, metadata=SEED)

    def __post_init__(self) -> None:
        validate(self)
        dbscan_only = [flag for flag, value in (("--eps", self.eps),
                                                ("--min-samples", self.min_samples))
                       if value is not None]
        if dbscan_only and self.method in ("hdbscan", "tsne_hdbscan"):
            raise ValueError(f"{' and '.join(dbscan_only)}: DBSCAN's, not used by "
                             f"--method {self.method} (it takes --min-cluster-size)")
        if self.method == "seed" and self.min_cluster_size is not None:
            raise ValueError("--min-cluster-size: not used by --method seed (it takes --eps "
                             "and --min-samples)")


@dataclass
class Clustering:
    labels: np.ndarray          # (n,) int, -1 = noise
    pca: np.ndarray             # (n, 2) first two principal components, for figures
    tsne: np.ndarray            # (n, 2) t-SNE coordinates, for figures
    used: dict = field(default_factory=dict)  # the parameters actually used

    @property
    def n_clusters(self) -> int:
        return len(np.unique(self.labels[self.labels >= 0]))

    @property
    def n_noise(self) -> int:
        return int((self.labels < 0).sum())


def knee_eps(points: np.ndarray, k: int) -> float:
    """DBSCAN's eps from the data: the knee of the sorted distances to each point's k-th
    neighbour (the point farthest below the chord from the smallest to the largest), at least
    :data:`SAME_FACE` (identical faces give a knee of 0, which DBSCAN refuses)."""
    from sklearn.neighbors import NearestNeighbors  # noqa: PLC0415

    k = min(k, len(points) - 1)
    dist = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)[0][:, k]
    dist = np.sort(dist)
    span = dist[-1] - dist[0]
    knee = 0
    if span > 0:
        knee = int(np.argmax(np.linspace(0.0, 1.0, len(dist)) - (dist - dist[0]) / span))
    return max(float(dist[knee]), SAME_FACE)


def pca(x: np.ndarray, components: int, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA  # noqa: PLC0415

    components = max(1, min(components, x.shape[0] - 1, x.shape[1]))
    return PCA(components, random_state=seed).fit_transform(x)


def tsne(x: np.ndarray, dims: int = 2, perplexity: float = 15.0, seed: int = 0,
         iterations: tuple[int, int] = (125, 250)) -> np.ndarray:
    """openTSNE embedding (FFT gradients in 2-D, Barnes-Hut in 3-D); ``iterations`` are the
    early-exaggeration and the main phase. Needs at least 4 points."""
    import openTSNE  # noqa: PLC0415

    perplexity = max(1.0, min(perplexity, (len(x) - 1) / 3))
    method = "fft" if dims <= 2 else "bh"
    embedding = openTSNE.TSNE(
        n_components=dims, perplexity=perplexity, random_state=seed, n_jobs=-1,
        negative_gradient_method=method, early_exaggeration_iter=iterations[0],
        n_iter=iterations[1], verbose=False).fit(np.ascontiguousarray(x, dtype=np.float64))
    return np.asarray(embedding)


def _hdbscan(points: np.ndarray, min_cluster_size: int) -> np.ndarray:
    from sklearn.cluster import HDBSCAN  # noqa: PLC0415

    return HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(points)


def _dbscan(points: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    from sklearn.cluster import DBSCAN  # noqa: PLC0415

    return DBSCAN(eps=eps, min_samples=min_samples).fit_predict(points)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0, 1, ... by decreasing size (ties by first appearance); noise stays -1."""
    out = np.full_like(labels, -1)
    ids, first, counts = np.unique(labels[labels >= 0], return_index=True, return_counts=True)
    order = sorted(range(len(ids)), key=lambda i: (-counts[i], first[i]))
    for new, i in enumerate(order):
        out[labels == ids[i]] = new
    return out


def content_ids(labels: np.ndarray, keys: list[str]) -> np.ndarray:
    """Cluster ids from content: each cluster's id is a hash, to 31 bits (an int32, never
    -1), of its smallest member key; noise stays -1. So adding another person's faces leaves
    every other cluster's id as it was; a cluster's id changes only when a member whose key
    sorts first joins or leaves it. Two clusters hashing alike (about 1 pair in 4 billion)
    are told apart by moving the later one's id up by one."""
    labels = np.asarray(labels)
    first: dict[int, str] = {}
    for label, key in zip(labels.tolist(), keys):
        if label >= 0 and (label not in first or key < first[label]):
            first[label] = key
    out = np.full(len(labels), -1, dtype=np.int64)
    taken: set[int] = set()
    for label, key in sorted(first.items(), key=lambda item: item[1]):
        new = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF
        while new in taken:
            new = (new + 1) & 0x7FFFFFFF
        taken.add(new)
        out[labels == label] = new
    return out


def cluster_encodings(encodings: np.ndarray, params: ClusterParams = ClusterParams()) -> Clustering:
    """Cluster ``(n, 128)`` encodings into people. Raises ValueError for fewer than
    :data:`MIN_FACES` faces or an unknown method."""
    if params.method not in METHODS:
        raise ValueError(f"unknown method {params.method!r}; choose one of {', '.join(METHODS)}")
    x = np.asarray(encodings, dtype=np.float32)
    n = len(x)
    if n < MIN_FACES:
        raise ValueError(f"{n} face(s): at least {MIN_FACES} are needed to find people")
    method = params.method
    if method == "auto":  # DBSCAN when its eps or min_samples was given
        dbscan = params.eps is not None or params.min_samples is not None
        method = "tsne_dbscan" if n >= SMALL_N else "dbscan" if dbscan else "hdbscan"
    # density grows with the data (more faces per person): 5 at DFDC's 20,000, 40 at 120,000
    mcs = params.min_cluster_size or max(int(np.clip(n // 20, 2, 5)), n // 3000)
    perplexity = params.perplexity or min(15.0, (n - 1) / 3)
    reduced = pca(x, params.pca_components, params.seed)
    used: dict = {"method": method, "faces": n}
    # t-SNE crashes the process on points without spread (one face over and over)
    spread = n >= 4 and float(np.ptp(x, axis=0).max()) >= SAME_FACE

    if method == "seed":
        from sklearn.manifold import TSNE  # noqa: PLC0415 - the seed's own t-SNE

        seed_perplexity = min(params.perplexity or 50.0, (n - 1) / 3)
        embedded = (TSNE(n_components=3, perplexity=seed_perplexity, init="pca",
                         random_state=params.seed).fit_transform(pca(x, 50, params.seed))
                    if spread else np.zeros((n, 3)))
        eps, ms = params.eps or 1.0, params.min_samples or 5
        labels = _dbscan(embedded, eps, ms)
        used.update(eps=eps, min_samples=ms, tsne_dims=3)
    else:
        embedded = tsne(reduced, 2, perplexity, params.seed) if spread else reduced[:, :2]
        used.update(perplexity=perplexity, tsne_dims=2)
        if method in ("hdbscan", "tsne_hdbscan"):
            points = x if method == "hdbscan" or n < SMALL_N else embedded
            labels = _hdbscan(points, mcs)
            used.update(min_cluster_size=mcs, clustered="encodings" if points is x else "tsne")
        else:
            points = x if method == "dbscan" or n < SMALL_N else embedded
            ms = params.min_samples or mcs
            eps = params.eps or knee_eps(points, ms)
            labels = _dbscan(points, eps, ms)
            used.update(eps=eps, min_samples=ms, clustered="encodings" if points is x else "tsne")
    pca2 = np.zeros((n, 2))
    pca2[:, : min(2, reduced.shape[1])] = reduced[:, :2]
    return Clustering(relabel_by_size(labels), pca2, embedded[:, :2], used)


def adjusted_rand(truth: list, labels: np.ndarray) -> float:
    """ARI against true identities, each noise face counted as a person of its own (noise is
    not "one more person")."""
    from sklearn.metrics import adjusted_rand_score  # noqa: PLC0415

    labels = np.asarray(labels).copy()
    noise = np.where(labels < 0)[0]
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(len(noise))
    return float(adjusted_rand_score(truth, labels))


def synthetic_encodings(n_people: int, per_person: int, noise_fraction: float = 0.05,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """DFDC-like stand-in encodings: ``n_people`` centres about 0.9 apart (as different
    people's encodings are), faces spread about 0.3 around them, plus a share of faces
    belonging to nobody (label -1). Returns ``(encodings float32, identity labels)``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 0.9 / np.sqrt(2 * 128), (n_people, 128))
    labels = np.repeat(np.arange(n_people), per_person)
    faces = centres[labels] + rng.normal(0.0, 0.3 / np.sqrt(128), (len(labels), 128))
    n_noise = int(noise_fraction * len(labels))
    strays = rng.normal(0.0, 0.9 / np.sqrt(2 * 128), (n_noise, 128))
    x = np.vstack([faces, strays]).astype(np.float32)
    return x, np.concatenate([labels, np.full(n_noise, -1)])
