import numpy as np
import pytest

from deepfake_lib.models.cluster_methods import (
    SAME_FACE,
    ClusterParams,
    adjusted_rand,
    cluster_encodings,
    content_ids,
    knee_eps,
    relabel_by_size,
    synthetic_encodings,
)


def _truth(labels):
    """Stray faces (-1) each belong to nobody else."""
    return np.where(labels < 0, -1 - np.arange(len(labels)), labels)


@pytest.mark.parametrize("people,per_person", [(40, 12), (3, 4), (100, 8)])
def test_default_finds_the_people_at_both_ends_of_the_scale(people, per_person):
    x, truth = synthetic_encodings(people, per_person,
                                   noise_fraction=0.2 if people == 100 else 0.05, seed=1)
    result = cluster_encodings(x)
    assert abs(result.n_clusters - people) <= max(1, people // 20)
    assert adjusted_rand(_truth(truth), result.labels) >= 0.9
    assert result.pca.shape == result.tsne.shape == (len(x), 2)


def test_seed_settings_stay_available_and_show_why_eps_does_not_transfer():
    """The seed's DBSCAN(eps 1) on 3-D t-SNE was tuned on the scale of its own data: on these
    five people t-SNE spreads every face further apart than 1, so all of them are noise,
    where the default, which takes eps from the data, finds the five."""
    x, truth = synthetic_encodings(5, 25, seed=2)
    seed = cluster_encodings(x, ClusterParams(method="seed"))
    assert seed.used == {"method": "seed", "faces": len(x), "eps": 1.0, "min_samples": 5,
                         "tsne_dims": 3}
    assert seed.n_clusters == 0 and seed.n_noise == len(x) and (seed.labels == -1).all()
    default = cluster_encodings(x)
    assert abs(default.n_clusters - 5) <= 1 and default.n_noise < len(x) // 10
    assert adjusted_rand(_truth(truth), default.labels) > 0.95


def test_every_method_runs_and_records_what_it_used():
    x, truth = synthetic_encodings(6, 15, seed=3)
    for method in ("tsne_hdbscan", "tsne_dbscan", "dbscan", "hdbscan"):
        result = cluster_encodings(x, ClusterParams(method=method))
        assert result.used["method"] == method
        assert adjusted_rand(_truth(truth), result.labels) > 0.8, method


def test_knee_eps_sits_between_the_two_scales():
    rng = np.random.default_rng(0)
    tight = np.concatenate([rng.normal(c, 0.05, (30, 2)) for c in (0, 5, 10)])
    eps = knee_eps(tight, 4)
    assert 0.02 < eps < 2.0


@pytest.mark.parametrize("face", [np.linspace(-0.2, 0.2, 128), np.full(128, 0.05)])
@pytest.mark.parametrize("n", [10, 60])
@pytest.mark.parametrize("method", ["dbscan", "tsne_dbscan", "seed"])
def test_identical_faces_are_one_person(method, n, face):
    """One face over and over (the same photo or frame): no spread for t-SNE, and every
    k-distance 0, which DBSCAN refuses as eps."""
    x = np.tile(face.astype(np.float32), (n, 1))
    result = cluster_encodings(x, ClusterParams(method=method))
    assert result.n_clusters == 1 and result.n_noise == 0
    assert result.tsne.shape == (n, 2) and np.isfinite(result.tsne).all()


def test_many_identical_faces_and_a_few_strays():
    x, _ = synthetic_encodings(5, 1, noise_fraction=0.0, seed=4)
    x = np.vstack([np.repeat(x[:1], 55, axis=0), x[1:]])  # the knee lies among the zeros
    assert knee_eps(x, 3) == SAME_FACE
    result = cluster_encodings(x, ClusterParams(method="dbscan"))
    assert result.used["eps"] == SAME_FACE
    assert len(set(result.labels[:55])) == 1 and result.labels[0] >= 0
    assert (result.labels[55:] == -1).all()


def test_relabel_by_size_orders_clusters_and_keeps_noise():
    assert relabel_by_size(np.array([5, 5, -1, 2, 2, 2, 7])).tolist() == [1, 1, -1, 0, 0, 0, 2]


def test_content_ids_come_from_the_first_member_not_the_numbering():
    keys = ["b", "a", "z", "c", "d", "e"]
    ids = content_ids(np.array([0, 0, -1, 1, 1, 1]), keys)
    assert ids[2] == -1 and ids[0] == ids[1] and ids[3] == ids[4] == ids[5] != ids[0]
    assert ids.min() >= -1 and ids.max() < 2**31  # int32, never the noise label
    # the same people numbered the other way round get the same ids
    assert content_ids(np.array([1, 1, -1, 0, 0, 0]), keys).tolist() == ids.tolist()
    # another person joining leaves both ids alone
    more = content_ids(np.array([0, 0, -1, 1, 1, 1, 2, 2]), keys + ["x", "y"])
    assert more[:6].tolist() == ids.tolist() and more[6] not in ids


def test_too_few_faces_and_unknown_method_are_clear_errors():
    with pytest.raises(ValueError, match="at least 3"):
        cluster_encodings(np.zeros((1, 128)))
    with pytest.raises(ValueError, match="unknown method"):
        cluster_encodings(np.zeros((10, 128)), ClusterParams(method="kmeans"))


def test_eps_is_used_or_refused_never_ignored():
    encodings, _ = synthetic_encodings(3, 4)  # 12 faces: auto would pick HDBSCAN
    assert cluster_encodings(encodings).used["method"] == "hdbscan"
    # a tiny eps makes every face noise: proof that it was used
    tiny = cluster_encodings(encodings, ClusterParams(eps=1e-6))
    assert tiny.used["method"] == "dbscan" and tiny.used["eps"] == 1e-6
    assert tiny.n_clusters == 0
    given = cluster_encodings(encodings, ClusterParams(min_samples=3))
    assert given.used["method"] == "dbscan" and given.used["min_samples"] == 3
    # and it changed DBSCAN's clustering: proof that it was used, not only recorded
    two = cluster_encodings(encodings, ClusterParams(min_samples=2))
    assert (given.n_clusters, given.n_noise) != (two.n_clusters, two.n_noise)
    with pytest.raises(ValueError, match="--eps: DBSCAN's, not used by --method hdbscan"):
        ClusterParams(method="hdbscan", eps=0.5)
    with pytest.raises(ValueError, match="--eps and --min-samples"):
        ClusterParams(method="tsne_hdbscan", eps=0.5, min_samples=3)
    with pytest.raises(ValueError, match="--min-cluster-size: not used by --method seed"):
        ClusterParams(method="seed", min_cluster_size=4)
