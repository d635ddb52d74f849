import os
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PBC, BCCD, LISC = DATA / "pbc", DATA / "bccd", DATA / "lisc"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str) -> None:
    """Skip a test whose real input is missing on a developer's machine; in CI (``CI=true``)
    fail it instead, so that a missing data set or browser never passes unnoticed."""
    if available:
        return
    message = f"{what} (see ../shared/data/README.md; .ci/run installs Chromium)"
    if IN_CI:
        pytest.fail(f"required in CI: {message}", pytrace=False)
    pytest.skip(message)


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
    require((PBC / "neutrophil").is_dir(), f"the real PBC data set is not at {PBC}")
    return PBC


@pytest.fixture(scope="session")
def lisc_dir() -> Path:
    require((LISC / "neutrophil").is_dir(), f"the LISC data set is not at {LISC}")
    return LISC


@pytest.fixture(scope="session")
def bccd_dir() -> Path:
    require((BCCD / "JPEGImages").is_dir(), f"the real BCCD data set is not at {BCCD}")
    return BCCD


@pytest.fixture(scope="session")
def chromium() -> str:
    require(Path(CHROMIUM).exists(), "Debian's chromium is not installed")
    return CHROMIUM


@pytest.fixture(scope="session")
def tissue_tiles(tmp_path_factory) -> list[Path]:
    """The wrong slide: 20 tiles of tissue (scikit-image's IHC image), each unlike every
    cell, so that every one is flagged."""
    from PIL import Image
    from skimage.data import immunohistochemistry

    tissue, folder = immunohistochemistry(), tmp_path_factory.mktemp("tissue")
    for n in range(20):
        y, x = divmod(n, 5)
        tile = tissue[y * 96 : y * 96 + 96, x * 96 : x * 96 + 96]
        Image.fromarray(tile).save(folder / f"{n}.png")
    return sorted(folder.iterdir())


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    from hematovision.data import make_synthetic

    return make_synthetic(
        tmp_path_factory.mktemp("synth") / "data",
        ("lymphocyte", "neutrophil"),
        per_class=40,
        size=64,
        seed=0,
        show_progress=False,
    )


@pytest.fixture(scope="session")
def synth_run(synth_dir, tmp_path_factory) -> Path:
    """A seed-cnn trained for 3 epochs on the simulated data set (shared by several tests)."""
    from hematovision.training import train

    return train(
        data=str(synth_dir),
        out=str(tmp_path_factory.mktemp("runs") / "seed"),
        arch="seed-cnn",
        epochs=3,
        image_size=64,
        batch_size=16,
        seed=0,
        show_progress=False,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """None (SQLite in the data folder, the default) or a fresh, empty PostgreSQL database on
    the server named by HEMATOVISION_TEST_POSTGRES_URL (scripts/test_postgres.sh; .ci/run)."""
    if request.param == "sqlite":
        yield None
        return
    yield from _fresh_postgres()


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database (for what only a database server has)."""
    yield from _fresh_postgres()


def _fresh_postgres():
    base = os.environ.get("HEMATOVISION_TEST_POSTGRES_URL")
    require(
        bool(base), "PostgreSQL: export HEMATOVISION_TEST_POSTGRES_URL=$(scripts/test_postgres.sh)"
    )
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"hv_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
