import os
from pathlib import Path

import pytest

PBC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pbc"
BCCD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bccd"


@pytest.fixture(autouse=True, scope="session")
def _private_decode_cache(tmp_path_factory):
    """Tests never read or fill the user's decode cache."""
    old = os.environ.get("HEMATOVISION_CACHE")
    os.environ["HEMATOVISION_CACHE"] = str(tmp_path_factory.mktemp("decode-cache"))
    yield
    if old is None:
        os.environ.pop("HEMATOVISION_CACHE", None)
    else:
        os.environ["HEMATOVISION_CACHE"] = old


@pytest.fixture(scope="session")
def pbc_dir() -> Path:
    if not (PBC / "neutrophil").is_dir():
        pytest.skip(f"the real PBC data set is not at {PBC} (CI always has it; see "
                    f"../shared/data/README.md)")
    return PBC


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    from hematovision.data import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp("synth") / "data",
                          ("lymphocyte", "neutrophil"), per_class=40, size=64, seed=0,
                          show_progress=False)


@pytest.fixture(scope="session")
def synth_run(synth_dir, tmp_path_factory) -> Path:
    """A seed-cnn trained for 3 epochs on the simulated data set (shared by several tests)."""
    from hematovision.training import train
    return train(data=str(synth_dir), out=str(tmp_path_factory.mktemp("runs") / "seed"),
                 arch="seed-cnn", epochs=3, image_size=64, batch_size=16, seed=0,
                 show_progress=False)
