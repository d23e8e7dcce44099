import subprocess
import sys


def test_importing_the_package_loads_no_model_and_starts_no_ray():
    code = ("import sys, pkgutil, importlib, deepfake_lib\n"
            "for m in pkgutil.iter_modules(deepfake_lib.__path__):\n"
            "    importlib.import_module('deepfake_lib.' + m.name)\n"
            "heavy = [m for m in ('torch', 'ray', 'face_recognition', 'facenet_pytorch', 'dlib',"
            " 'segmentation_models_pytorch', 'timm') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
