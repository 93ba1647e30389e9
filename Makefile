.PHONY: demo test bench conformance

demo:  ## install, then load the bundled example model, run it and print outputs and timings
	python3 -m pip install -e . && python3 -m jitort run --example resnet50 --runs 20

test:  ## install with test extras and run the whole suite
	python3 -m pip install -e ".[test]" && python3 -m pytest -q

bench:  ## reference backend vs onnxruntime (no optimizations), each in its own process
	python3 benchmarks/reference_speed.py

conformance:  ## per-op pass report of ONNX's node conformance cases
	python3 -m pytest -q tests/ops/test_conformance.py
