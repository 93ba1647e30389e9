"""The CPU backend: kernel groups lowered to Numba source, BLAS binding, memory planner, whole-plan module."""
