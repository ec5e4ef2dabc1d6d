"""WebAssembly backend: CPython on WASI under wasmtime (being built)."""
