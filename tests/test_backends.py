"""Backends are plug-ins: a third backend is its printer module (printers registered per
kernel statement class), its loader if it compiles, and its name in ``BACKENDS``. The
backends here are written in this file alone and registered for a test: nothing else
in rgraph changes for them."""
import marshal
import sys
import types
import warnings

import numpy as np
import pytest

import rgraph as rg
from rgraph import cache
from rgraph import kernel as K
from rgraph.backends import BACKENDS, get_backend
from rgraph.backends.base import Backend, Loaded, prints
from rgraph.backends.numpy_backend import ArrayPrinter, NumpyBackend
from rgraph.codegen import CodegenError


class Toy(NumpyBackend):
    """The numpy backend under another name, computing in float64 only, with a printer
    of its own for comments (a method of any name: the registry finds it)."""

    name = "toy"
    dtypes = ("float64",)

    def version(self) -> str:
        return "toy 1.0"

    @prints(K.Comment)
    def note(self, st, sc):
        return [f"# (toy) {ln}" for ln in st.text.splitlines()]


class MarshalLoaded(Loaded):
    """A compiler of its own: a function compiles to its marshalled code object, one file
    per function (``NAME.FUNCTION.marshal``) in the backend's folder; every call runs the
    function loaded back from that file."""

    def __init__(self, entry, module, text, in_process=False):
        super().__init__(entry, module, text, in_process)
        self.functions = {}

    def prepare(self, calls, what=None):
        entry, names = self.entry, [n for n, _ in calls if n not in self.functions]
        if not names:
            return
        with entry.lock():
            rec = entry.checked_record()
            have = {c["function"] for c in rec["compiled"]}
            missing = [n for n in names if n not in have]
            if missing:
                entry.compiled_dir.mkdir(exist_ok=True)
                for n in missing:
                    cache.write_atomic(self.file(n),
                                       marshal.dumps(getattr(self.module, n).__code__))
                self.compiled_here += len(missing)
                rec["compiled"] += [{"function": n, "signature": "*", "target": "python"}
                                    for n in missing]
                entry.write_record(rec)
            for n in names:
                code = marshal.loads(self.file(n).read_bytes())
                self.functions[n] = types.FunctionType(code, vars(self.module), n)
                self.loaded += n not in missing
            entry.touch()

    def file(self, name):
        return self.entry.compiled_dir / f"{self.entry.name}.{name}.marshal"

    def call(self, name, *args):
        self.prepare([(name, args)])
        return self.functions[name](*args)


class Marshal(NumpyBackend):
    """The numpy backend's code, compiled by MarshalLoaded."""

    name = "marshal"
    jit = True

    def version(self) -> str:
        return "marshal 1"

    def compiled_dir(self, folder):
        return folder / "marshalled"

    def loader(self, entry, module, text, in_process=False):
        return MarshalLoaded(entry, module, text, in_process)


class Bare(Backend):
    """A backend that registers no statement printers but Comment's."""

    name = "bare"
    dtypes = ("float64",)
    ELEMENT = ""
    IMPORTS = NumpyBackend.IMPORTS
    HELPERS = NumpyBackend.HELPERS

    def __init__(self):
        self.printer = ArrayPrinter({"fully_qualified_modules": True})

    def version(self) -> str:
        return "bare 0"


def gradient(backend, n):
    est = rg.compile(rg.cells.tanh_rnn(3, n, 3), "uoro", backend=backend)
    rng = np.random.default_rng(0)
    g = est.total_gradient(est.init_params(0), rng.standard_normal((8, 3)),
                           rng.integers(0, 3, 8), seed=3)
    return est, g["W"]


@pytest.fixture
def registered(monkeypatch, tmp_path):
    monkeypatch.setenv("RGRAPH_CACHE_DIR", str(tmp_path))
    for cls in (Toy, Marshal, Bare):
        monkeypatch.setitem(BACKENDS, cls.name, cls)
    return tmp_path


def test_a_third_backend_compiles_and_runs_an_estimator(registered):
    est, g = gradient("toy", 5)
    _, ref = gradient("numpy", 5)
    assert np.array_equal(g, ref)
    assert isinstance(est.backend, Toy) and est.path.parent == registered
    assert "_toy_" in est.path.name and "(toy 1.0)" in est.source.splitlines()[0]
    assert "    # (toy) " in est.source                # its own printer of comments
    assert "run_batch" not in est.entry_points     # no batch_step declared
    assert cache.Entry(registered, est.path.stem).backend.name == "toy"


def test_a_backend_with_a_loader_of_its_own(registered):
    est, g = gradient("marshal", 6)
    _, ref = gradient("numpy", 6)
    assert np.array_equal(g, ref)
    entry = est.code.entry
    files = entry.compiled_files()
    assert est.code.compiled_here == len(files) > 0
    assert {p.parent for p in files} == {registered / "marshalled"}
    rec = entry.read_record()                       # checksummed by the cache
    assert set(rec["files"]) == {p.name for p in files}
    item = next(i for i in cache.scan(registered) if i.name == entry.name)
    assert set(files) <= set(item.paths)           # counted, pruned, cleared with it
    # a damaged compiled file: removed and rebuilt, with one warning naming it
    bad = files[0]
    bad.write_bytes(bad.read_bytes()[:5])
    modname = est.module.__name__
    del cache._LOADED[modname], sys.modules[modname]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        again, g2 = gradient("marshal", 6)
    msgs = [str(x.message) for x in w if issubclass(x.category, cache.CacheWarning)]
    assert len(msgs) == 1 and bad.name in msgs[0], msgs
    assert again.code.compiled_here == len(files) and np.array_equal(g2, g)
    assert cache.clear(registered)[0] >= 1 and not list((registered / "marshalled").iterdir())


def test_a_missing_printer_is_named_when_the_module_is_built(registered):
    with pytest.raises(CodegenError, match=r"backend bare has no printer for the kernel "
                                           r"statement \w+; register one with @prints"):
        rg.compile(rg.cells.tanh_rnn(3, 7, 3), "rtrl", backend="bare")


def test_capabilities_a_class_cannot_back_are_refused():
    with pytest.raises(TypeError, match="jit = True needs a loader"):
        type("NoLoader", (NumpyBackend,), {"name": "noloader", "jit": True})
    with pytest.raises(TypeError, match="batch_step = True needs printers of "
                                        "ForStreams, OverStreams"):
        type("NoBatch", (NumpyBackend,), {"name": "nobatch", "batch_step": True})


def test_declared_capabilities():
    numba, numpy = get_backend("numba"), get_backend("numpy")
    assert numba.jit and numba.batch_step and not numpy.jit and not numpy.batch_step
    assert numba.version().startswith("numba ") and numpy.version().startswith("numpy ")
    for b in (numba, numpy):
        assert b.dtypes == ("float64", "float32")
        assert {K.Ew, K.MatVec, K.Comment} <= set(b.PRINTERS)
    Toy().check_dtype("float64")
    with pytest.raises(ValueError, match="backend toy does not compute in float32 "
                                         r"\(its dtypes: float64\)"):
        Toy().check_dtype("float32")
