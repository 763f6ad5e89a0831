# The benchmark is a script (python tests/benchmarks/postprocess_quality.py), not a test module.
collect_ignore = ["postprocess_quality.py", "speed_levers.py", "gpu_levers.py"]
