"""Runtime helpers: storage (local, gs://), outputs we own, CPUs, threads, memory, phase timings."""
