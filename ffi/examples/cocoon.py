#!/usr/bin/env python3
"""The C API from Python through ctypes: open a pinned model, stream an answer, verify the
receipt.

  python3 ffi/examples/cocoon.py target/release/libcocoon.so MODEL_DIR "What is 2+2?" [--raw]
"""
import ctypes as C
import json
import sys

STATUS = ["OK", "INVALID_ARGUMENT", "IO", "PIN_MISMATCH", "MODEL_FORMAT", "BACKEND", "ATTESTATION",
          "REJECTED", "PANIC"]
TOKEN_CB = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(C.c_char), C.c_size_t)


class Cocoon:
    def __init__(self, path):
        lib = self.lib = C.CDLL(path)
        lib.cocoon_version.restype = C.c_char_p
        lib.cocoon_last_error.restype = C.c_char_p
        lib.cocoon_pin.argtypes = [C.c_char_p, C.POINTER(C.c_void_p)]
        lib.cocoon_model_open.argtypes = [C.c_char_p, C.c_char_p, C.c_char_p, C.POINTER(C.c_void_p)]
        lib.cocoon_model_free.argtypes = [C.c_void_p]
        lib.cocoon_generate.argtypes = [C.c_void_p, C.c_char_p, C.c_char_p, TOKEN_CB, C.c_void_p, C.POINTER(C.c_void_p)]
        lib.cocoon_verify_receipt.argtypes = [C.c_char_p, C.c_char_p, C.POINTER(C.c_void_p)]
        lib.cocoon_string_free.argtypes = [C.c_void_p]

    def _check(self, status, what):
        if status != 0:
            raise RuntimeError(f"{what}: {STATUS[status]}: {(self.lib.cocoon_last_error() or b'').decode()}")

    def _take(self, ptr):
        """Copies a library-owned string and frees it."""
        try:
            return C.string_at(ptr.value).decode()
        finally:
            self.lib.cocoon_string_free(ptr)

    def pin(self, model_dir):
        out = C.c_void_p()
        self._check(self.lib.cocoon_pin(model_dir.encode(), C.byref(out)), "pin")
        return self._take(out)

    def open(self, model_dir, pin, **options):
        handle = C.c_void_p()
        self._check(self.lib.cocoon_model_open(model_dir.encode(), pin.encode(), json.dumps(options).encode(),
                                               C.byref(handle)), "open")
        return handle

    def generate(self, handle, prompt, on_piece, **params):
        cb = TOKEN_CB(lambda _user, piece, n: on_piece(C.string_at(piece, n).decode("utf-8")) or 0)
        receipt = C.c_void_p()
        self._check(self.lib.cocoon_generate(handle, prompt.encode(), json.dumps(params).encode(), cb, None,
                                             C.byref(receipt)), "generate")
        return json.loads(self._take(receipt))

    def verify(self, receipt, **options):
        report = C.c_void_p()
        status = self.lib.cocoon_verify_receipt(json.dumps(receipt).encode(), json.dumps(options).encode(),
                                                C.byref(report))
        if status not in (0, 7):
            self._check(status, "verify")
        return json.loads(self._take(report))


if __name__ == "__main__":
    lib_path, model_dir, prompt = sys.argv[1:4]
    raw = "--raw" in sys.argv[4:]
    cocoon = Cocoon(lib_path)
    print("libcocoon", cocoon.lib.cocoon_version().decode(), file=sys.stderr)
    pin = cocoon.pin(model_dir)
    model = cocoon.open(model_dir, pin, attest="dev")  # insecure stand-in: no TEE here
    pieces = []
    receipt = cocoon.generate(model, prompt, lambda p: pieces.append(p) or print(p, end="", flush=True),
                              max_tokens=32, raw=raw)
    print()
    report = cocoon.verify(receipt, allow_dev=True)
    cocoon.lib.cocoon_model_free(model)
    assert pieces and receipt["body"]["model_pin"] == pin, "no text or wrong pin"
    assert report["verdict"] == "ok", report
    print("receipt", receipt["binding"][:32] + "...", "verified:", report["verdict"], "(dev evidence proves nothing)")
