"""The Python binding without a GPU (and without torch): library loading, the ctypes
layout of vecattn_prefill_args, argument checks through the library's own checker, and the
per-head thresholds reader. Run by CTest with VECATTN_LIBRARY set to the built library."""
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import unittest

import vecattn
from vecattn import _args, _lib
from vecattn._args import View


def views(shape_q=(1, 4, 256, 128), shape_kv=(1, 2, 256, 128), dtype="bfloat16", layout="bhsd"):
    """Fake, 16-byte aligned device addresses: the checks must never read them."""
    def strides(shape):
        return (shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1)
    return (View("q", 0x10000, shape_q, strides(shape_q), dtype), View("k", 0x20000, shape_kv, strides(shape_kv), dtype),
            View("v", 0x30000, shape_kv, strides(shape_kv), dtype), View("o", 0x40000, shape_q, strides(shape_q), dtype))


class Loading(unittest.TestCase):
    def test_missing_library_names_the_path(self):
        env = dict(os.environ, VECATTN_LIBRARY="/nonexistent/libvecattn.so")
        code = "import vecattn\ntry:\n    vecattn.library_version()\nexcept vecattn.LibraryNotFound as e:\n    print(e)\n"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        self.assertIn("/nonexistent/libvecattn.so", out)
        self.assertIn("VECATTN_LIBRARY", out)

    def test_not_a_vecattn_library(self):
        env = dict(os.environ, VECATTN_LIBRARY=ctypes.util.find_library("c") or "libc.so.6")
        code = "import vecattn\ntry:\n    vecattn.library_version()\nexcept vecattn.LibraryNotFound as e:\n    print(e)\n"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        self.assertIn("lacks vecattn_", out)

    def test_version(self):
        self.assertEqual(vecattn.library_version(), vecattn.__version__)


class Layout(unittest.TestCase):
    def test_init_writes_the_fields_where_ctypes_reads_them(self):
        size = ctypes.sizeof(_lib.PrefillArgs)
        buf = (ctypes.c_ubyte * (size + 64))(*([0xAB] * (size + 64)))
        _lib.lib().vecattn_prefill_args_init(buf)
        a = _lib.PrefillArgs.from_buffer(buf)
        self.assertAlmostEqual(a.threshold, 0.9, places=6)
        self.assertEqual((a.pq, a.bk, a.gk, a.causal, a.dense, a.head_dim, a.dtype), (64, 16, 16, 1, 0, 128, 0))
        # the last fields are zeroed by init: the C structure is not longer than the mirror ...
        self.assertEqual((a.workspace, a.workspace_size, a.sparsity_out, a.chunk_size), (None, 0, None, 0))
        # ... nor shorter: nothing past it was written
        self.assertEqual(bytes(buf[size:]), b"\xab" * 64)


class Arguments(unittest.TestCase):
    def check(self, **kw):
        q, k, v, o = kw.pop("views", views())
        a, keep = _args.build_args(q, k, v, o, **kw)
        _args.check_args(a)
        return a

    def test_valid(self):
        a = self.check(thresholds=[0.9])
        self.assertEqual((a.batch, a.heads_q, a.heads_kv, a.seq_q, a.head_dim), (1, 4, 2, 256, 128))
        self.assertGreater(_args.workspace_size(a), 0)
        self.assertEqual(_args.workspace_size(self.check(dense=True)), 0)

    def test_library_messages(self):
        cases = [(dict(views=views((1, 4, 256, 96), (1, 2, 256, 96))), 11, "head_dim"),
                 (dict(thresholds=[1.5]), 14, "threshold"),
                 (dict(thresholds=[0.9, 0.9, 0.0, 0.9]), 14, "thresholds[2]"),
                 (dict(pq=48), 15, "pq"),
                 (dict(views=views((1, 4, 300, 128), (1, 2, 256, 128))), 12, None)]
        for kw, status, needle in cases:
            with self.subTest(kw=kw):
                with self.assertRaises(vecattn.VecattnError) as cm:
                    self.check(**kw)
                self.assertEqual(cm.exception.status, status)
                self.assertTrue(cm.exception.name.startswith("VECATTN_E_"))
                if needle:
                    self.assertIn(needle, cm.exception.message)

    def test_python_checks(self):
        with self.assertRaises(TypeError):
            self.check(views=views(dtype="float32"))
        with self.assertRaises(ValueError):
            self.check(layout="bsdh")
        q, k, v, o = views()
        bad = View("k", k.ptr, k.shape, (k.strides[0], k.strides[1], 1, 256), k.dtype)
        with self.assertRaisesRegex(ValueError, "last dimension"):
            self.check(views=(q, bad, v, o))
        with self.assertRaisesRegex(ValueError, "per-head"):
            _args.thresholds_list([0.9, 0.8], 4)
        with self.assertRaisesRegex(ValueError, "scale"):
            self.check(scale=-1.0)

    def test_bshd_strides(self):
        shape_q, shape_kv = (2, 256, 4, 64), (2, 256, 2, 64)
        def strides(s):
            return (s[1] * s[2] * s[3], s[2] * s[3], s[3], 1)
        vs = (View("q", 0x10000, shape_q, strides(shape_q), "float16"), View("k", 0x20000, shape_kv, strides(shape_kv), "float16"),
              View("v", 0x30000, shape_kv, strides(shape_kv), "float16"), View("o", 0x40000, shape_q, strides(shape_q), "float16"))
        a = self.check(views=vs, layout="bshd")
        self.assertEqual((a.batch, a.heads_q, a.seq_q, a.head_dim), (2, 4, 256, 64))
        self.assertEqual(list(a.q_stride), [256 * 4 * 64, 64, 4 * 64])


class Thresholds(unittest.TestCase):
    def write(self, doc):
        f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        f.write(doc if isinstance(doc, str) else json.dumps(doc))
        f.close()
        self.addCleanup(os.unlink, f.name)
        return f.name

    def test_good(self):
        doc = {"format": "vecattn-thresholds", "version": 1, "thresholds": [[0.9, 0.5], [1.0, 0.25]]}
        self.assertEqual(vecattn.load_thresholds(self.write(doc)), [[0.9, 0.5], [1.0, 0.25]])

    def test_bad(self):
        base = {"format": "vecattn-thresholds", "version": 1}
        bad = ["{not json", dict(base, format="other", thresholds=[[0.9]]), dict(base, version=2, thresholds=[[0.9]]),
               dict(base, thresholds=[[0.9, 0.5], [0.9]]), dict(base, thresholds=[[0.9, 1.5]]),
               dict(base, thresholds=[[0.0]]), '{"format": "vecattn-thresholds", "version": 1, "thresholds": [[NaN]]}',
               dict(base, thresholds=[]), dict(base, thresholds=[["0.9"]]), dict(base, thresholds=[[True]])]
        for doc in bad:
            with self.subTest(doc=doc):
                with self.assertRaises(ValueError):
                    vecattn.load_thresholds(self.write(doc))
        with self.assertRaises(OSError):
            vecattn.load_thresholds("/nonexistent/thresholds.json")


if __name__ == "__main__":
    unittest.main(verbosity=1)
