.PHONY: demo test bench conformance

demo:  ## install, compile the bundled example into cache/, benchmark it against onnxruntime
	python3 -m pip install -e ".[bench]" && python3 -m jitort warmup --example resnet50 --cache-dir cache && python3 -m jitort bench --example resnet50 --vs onnxruntime --cache-dir cache

test:  ## install with test extras and run the whole suite
	python3 -m pip install -e ".[test]" && python3 -m pytest -q

bench:  ## reference backend vs onnxruntime (no optimizations), each in its own process
	python3 benchmarks/reference_speed.py

conformance:  ## per-op pass report of ONNX's node conformance cases
	python3 -m pytest -q tests/ops/test_conformance.py
