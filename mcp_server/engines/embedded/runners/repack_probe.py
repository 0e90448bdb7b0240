"""Run in a child process by :func:`.repack.repack_works`: exit 0 when llama.cpp's repacked
weights (its AMX buffer type) decode a batch without crashing.

Usage: ``python repack_probe.py MODEL.gguf THREADS``. It imports llama-cpp-python only (it
is run as a file, not as part of the package), loads the model with ``use_extra_bufts``,
and decodes one prompt of 8 rows for 2 sequences (ggml's AMX kernels for more than one
row), then one row (its VNNI kernels for a single row). A crash shows as a signal in the
exit status; llama.cpp's own log goes to stderr.
"""

import sys

import llama_cpp.llama_cpp as lib


def main(gguf_path: str, threads: int) -> int:
    """Load and decode as described above; returns the exit status (0 when decoding worked)."""
    lib.llama_backend_init()
    model_params = lib.llama_model_default_params()
    model_params.use_extra_bufts = True
    model = lib.llama_model_load_from_file(gguf_path.encode(), model_params)
    if not model:
        return 2
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_seq_max, params.kv_unified = 64, 2, False
    params.n_batch = params.n_ubatch = 32
    params.n_threads = params.n_threads_batch = threads
    ctx = lib.llama_init_from_model(model, params)
    if not ctx:
        return 2
    batch = lib.llama_batch_init(32, 0, 1)
    rows = [(seq, pos) for seq in (0, 1) for pos in range(4)] + [(0, 4)]
    for chunk in (rows[:8], rows[8:]):
        batch.n_tokens = len(chunk)
        for i, (seq, pos) in enumerate(chunk):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = 1 + pos, pos, 1, 1
            batch.seq_id[i][0] = seq
        if lib.llama_decode(ctx, batch) != 0:
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
