"""Notebook 5's graders: right answers pass, typical mistakes are named, the package's code is refused."""

import math

import pytest
import torch
from torch import nn

from adapterlib import PrefixEncoder
from adapterlib.exercises import NotYet, Unanswered, check, grade, nb05
from adapterlib.exercises.nb05 import PrefixMLP


def prefix_attention(
    query,
    key,
    value,
    prefix_key,
    prefix_value,
    attention_mask,
    *,
    extend_mask=True,
    prefix_queries=False,
    scale=None,
    hide_padding=True,
    prefix_visible=True,
):
    """A learner's prefix attention; the keywords switch on one typical mistake each."""
    batch, heads, _, d_h = query.shape
    n = prefix_key.shape[1]
    keys = torch.cat([prefix_key.expand(batch, -1, -1, -1), key], dim=2)
    values = torch.cat([prefix_value.expand(batch, -1, -1, -1), value], dim=2)
    if prefix_queries:
        query = torch.cat([prefix_key.expand(batch, -1, -1, -1), query], dim=2)
    mask = attention_mask if hide_padding else torch.ones_like(attention_mask)
    if extend_mask:
        prefix_mask = torch.ones(batch, n) if prefix_visible else torch.zeros(batch, n)
        mask = torch.cat([prefix_mask.to(mask.dtype), mask], dim=1)
    additive = (1.0 - mask[:, None, None, :].float()) * -1e9
    scores = query @ keys.transpose(-1, -2) / (scale or math.sqrt(d_h)) + additive
    return scores.softmax(-1) @ values


def test_right_prefix_attention_passes():
    assert "padded" in grade("5.prefix_attention", prefix_attention)


@pytest.mark.parametrize(
    "mistake, message",
    [
        (dict(extend_mask=False), "must cover the n prefix positions"),
        (dict(prefix_visible=False), "prefix positions get no attention"),
        (dict(prefix_queries=True), "the queries stay one per real token"),
        (dict(hide_padding=False), "padded keys must stay masked"),
    ],
    ids=["mask-not-extended", "prefix-masked", "prefix-on-queries", "padding-visible"],
)
def test_prefix_attention_mistakes_are_named(mistake, message):
    wrong = lambda *args: prefix_attention(*args, **mistake)
    with pytest.raises(NotYet, match=message):
        grade("5.prefix_attention", wrong)


def test_scaling_by_the_model_width_is_named():
    def scaled_by_d(query, *rest):
        return prefix_attention(query, *rest, scale=math.sqrt(query.shape[1] * query.shape[-1]))

    with pytest.raises(NotYet, match=r"divided by sqrt\(heads \* d_h\)"):
        grade("5.prefix_attention", scaled_by_d)


def test_padded_query_rows_are_compared():
    def zero_padded_rows(query, key, value, prefix_key, prefix_value, attention_mask):
        output = prefix_attention(query, key, value, prefix_key, prefix_value, attention_mask)
        return output * attention_mask[:, None, :, None]

    with pytest.raises(NotYet, match="at padded query rows"):
        grade("5.prefix_attention", zero_padded_rows)


def test_package_attention_is_refused():
    from adapterlib.attention import scaled_dot_product_attention

    with pytest.raises(NotYet, match="package's (own|version)"):
        grade("5.prefix_attention", scaled_dot_product_attention)


def test_unanswered_attention_returns_the_reference(capsys):
    def template(query, key, value, prefix_key, prefix_value, attention_mask):
        raise NotImplementedError("write the prefix attention")

    with pytest.raises(Unanswered):
        grade("5.prefix_attention", template)
    reference = check("5.prefix_attention", template)
    assert "Not answered yet" in capsys.readouterr().out
    assert reference is nb05.prefix_attention  # the package's version, which the cells below then use


class LearnerMLP(nn.Module):
    """A learner's reparameterisation MLP; ``layout`` picks the reshape (right or a typical mistake)."""

    layout = "right"

    def __init__(self, num_layers, d_model, num_virtual_tokens, hidden):
        super().__init__()
        self.sizes = (num_layers, d_model, num_virtual_tokens)
        self.embedding = nn.Parameter(torch.randn(num_virtual_tokens, d_model) * 0.02)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, num_layers * 2 * d_model)
        )

    def forward(self):
        layers, d, n = self.sizes
        out = self.mlp(self.embedding)
        if self.layout == "direct-view":
            return out.view(layers, 2, n, d)
        if self.layout == "values-first":
            return out.view(n, 2, layers, d).permute(2, 1, 0, 3)
        return out.view(n, layers, 2, d).permute(1, 2, 0, 3)


def test_right_mlp_passes():
    assert "PrefixEncoder" in grade("5.prefix_mlp", LearnerMLP)


@pytest.mark.parametrize(
    "layout, message",
    [("direct-view", "the reshape mixes tokens"), ("values-first", r"out\[0, 1\] \(layer 0's values\)")],
)
def test_mlp_reshape_mistakes_are_named(layout, message):
    wrong = type(f"MLP_{layout}", (LearnerMLP,), {"layout": layout})
    with pytest.raises(NotYet, match=message):
        grade("5.prefix_mlp", wrong)


def test_mlp_without_tanh_is_named():
    class NoTanh(LearnerMLP):
        def __init__(self, num_layers, d_model, num_virtual_tokens, hidden):
            super().__init__(num_layers, d_model, num_virtual_tokens, hidden)
            self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.Linear(hidden, num_layers * 2 * d_model))

    with pytest.raises(NotYet, match="no tanh"):
        grade("5.prefix_mlp", NoTanh)


def test_mlp_with_the_wrong_output_width_is_named():
    class KeysOnly(LearnerMLP):
        def __init__(self, num_layers, d_model, num_virtual_tokens, hidden):
            super().__init__(num_layers, d_model, num_virtual_tokens, hidden)
            self.mlp[2] = nn.Linear(hidden, num_layers * d_model)

    with pytest.raises(NotYet, match="parameters"):
        grade("5.prefix_mlp", KeysOnly)


def test_package_prefix_encoder_is_refused():
    class Wrapped(PrefixEncoder):
        pass

    for answer in (PrefixEncoder, Wrapped):
        with pytest.raises(NotYet, match="package's (own|version)"):
            grade("5.prefix_mlp", answer)


def test_unanswered_mlp_returns_the_reference(capsys):
    class Template(nn.Module):
        def __init__(self, num_layers, d_model, num_virtual_tokens, hidden):
            super().__init__()
            raise NotImplementedError("build the embedding and the MLP")

    assert check("5.prefix_mlp", Template) is PrefixMLP
    assert "Not answered yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    "answer, message",
    [
        (46_080 // 2, "key vector and a value vector"),
        (46_080 // 6, "one layer"),
        (46_080 * 2, "12 layers"),
        (46_080 // 12, "head width d_h .* without the key/value pair"),
        (46_080 + 770, "classifier head"),
        (1234, "not the count"),
    ],
)
def test_prefix_count_mistakes_are_named(answer, message):
    with pytest.raises(NotYet, match=message):
        grade("5.prefix_params", answer)


def test_prefix_count_hints_do_not_spell_out_the_formula():
    for answer in (46_080 + 770, 1234):
        with pytest.raises(NotYet) as failure:
            grade("5.prefix_params", answer)
        assert "46,080" not in str(failure.value) and "multiply" not in str(failure.value)


def test_prefix_count_right_and_unanswered():
    assert "46,080" in grade("5.prefix_params", 46_080)
    assert check("5.prefix_params", ...) is Ellipsis


def test_prefix_attention_of_another_dtype_gets_feedback_not_a_crash():
    def in_float64(*inputs):
        return prefix_attention(*inputs).double()  # the learner's right answer above, in float64

    with pytest.raises(NotYet, match="float64"):
        grade("5.prefix_attention", in_float64)


def test_an_answer_that_calls_the_package_reference_is_refused(capsys):
    def template(query, key, value, prefix_key, prefix_value, attention_mask):
        raise NotImplementedError("write the prefix attention")

    reference = check("5.prefix_attention", template)
    capsys.readouterr()
    with pytest.raises(NotYet, match="calls the package.s adapterlib.unified.attention_with_prefix"):
        grade("5.prefix_attention", lambda *inputs: reference(*inputs))
