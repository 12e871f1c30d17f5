"""The corpus comparison itself: it must catch what differs and pass what only rounds."""

from tests.corpus.compare import differences


def test_equal_text_passes():
    assert differences("tensor([1.0000, 2.5000])\n", "tensor([1.0000, 2.5000])\n") == []


def test_last_digit_rounding_passes():
    assert differences("tensor([0.1234])", "tensor([0.1235])") == []


def test_wrong_value_fails():
    assert differences("tensor([0.1234])", "tensor([0.1240])")


def test_whole_numbers_are_exact():
    assert differences("tensor([1., 2.])", "tensor([1., 3.])")
    assert differences("torch.Size([2, 3])", "torch.Size([2, 4])")


def test_digits_inside_names_are_text():
    assert differences("<AddBackward0 object at 0x7f00>", "<AddBackward1 object at 0x7f00>")


def test_addresses_are_masked():
    assert differences("<AddBackward0 object at 0x7f00>", "<AddBackward0 object at 0xabcd12>") == []


def test_line_count_and_text_differences_fail():
    assert differences("a\nb\n", "a\n")
    assert differences("grad_fn=<MulBackward0>", "grad_fn=<AddBackward0>")


def test_nan_and_inf():
    assert differences("nan inf", "nan inf") == []
    assert differences("nan", "inf")


def test_the_module_name_and_column_padding_are_not_differences():
    assert differences("torch.Size([2, 3]) torch.float64", "engine.Size([2, 3]) engine.float64") == []
    assert differences("tensor([ 0.0000, -1.0000])", "tensor([-0.0000, -1.0000])") == []
    assert differences("tensor([1.0000, 2.0000])", "tensor([1.0000,2.0000, 3.0000])")
