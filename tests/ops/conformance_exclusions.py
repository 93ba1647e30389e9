"""ONNX node conformance cases jitort does not pass, each with its reason.

Every entry is ``name: "# BUG: ..."`` (we are wrong and should fix it) or ``"# UNSUPPORTED: ..."``
(a deliberate gap). This list may only shrink. Random ops are checked by distribution in
tests/ops/test_random.py instead of by value.
"""

EXCLUDED: dict[str, str] = {
}

#: Cases whose outputs are random: checked for shape and dtype here, by distribution elsewhere.
RANDOM_OUTPUTS = {
    "test_bernoulli",
    "test_bernoulli_double",
    "test_bernoulli_seed",
    "test_bernoulli_expanded",
    "test_bernoulli_double_expanded",
    "test_bernoulli_seed_expanded",
    "test_randomuniformlike",
    "test_training_dropout",
    "test_training_dropout_default",
    "test_training_dropout_default_mask",
    "test_training_dropout_mask",
}
