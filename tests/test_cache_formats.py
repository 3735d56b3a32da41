"""The cache-format registry: every format's numbers price `cache_bytes` exactly, specs
round-trip through config.json, and bad values are one-line errors naming the key."""

import pytest
import torch

from tiny import tiny_config
from tpa_compress.cache_formats import format_names, get_format, parse_spec
from tpa_compress.cache_formats.grouped import fake_quantize_tokens, quantized_read
from tpa_compress.cache_formats.hadamard import rotate, rotation_block, unrotate
from tpa_compress.errors import TPAError
from tpa_compress.layout import Component, LayerLayout, cache_bytes, original_layouts
from tpa_compress.recipe import parse_recipe, validate_for_model

FULL = Component("full", 1, 256)
LAT = Component("latent", 1, 256, 96)
RULES = [{"select": "all", "k": {"method": "per_head_svd", "rank": 8}}]


def test_registry_lists_every_format_in_order():
    assert format_names() == ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "int3", "int2")
    assert [get_format(n).bits for n in format_names()] == [32, 16, 16, 8, 8, 4, 3, 2]


@pytest.mark.parametrize(
    "name,per_token", [("fp32", 2048), ("bf16", 1024), ("fp16", 1024), ("fp8", 512), ("int8", 516)]
)
def test_per_token_formats_price_as_before(name, per_token):
    lay = LayerLayout(FULL, FULL, None, name)
    assert lay.bytes_per_token() == per_token
    assert cache_bytes([lay], 1000) == 1000 * per_token
    sink = LayerLayout(LAT, LAT, 512, name, sink=1)
    want = 2 * 256 * (4 if name == "fp32" else 2)  # exact sink: bf16 in a one-byte cache
    assert sink.sink_bytes() == want
    assert cache_bytes([sink], 100) == 100 * sink.bytes_per_token() + want


@pytest.mark.parametrize("bits", [4, 3, 2])
def test_grouped_formats_count_every_byte(bits):
    lay = LayerLayout(FULL, FULL, None, f"int{bits}:group=32,recent=16,sink=0")
    assert lay.bytes_per_token() == 2 * 256 * (bits + 1) / 8  # (bits + 32/32) per value
    n = 1000  # K: per channel, ceil(1000/32) = 32 groups; V: per token, 256/32 = 8 groups
    want = 2 * n * 256 * bits / 8 + 32 * 256 * 4 + n * 8 * 4 + 2 * (16 + 31) * 256 * 2
    assert cache_bytes([lay], n) == want
    # a latent V groups per channel; a sliding layer holds its window; the exact sink
    lat = LayerLayout(LAT, LAT, 512, f"int{bits}:sink=0", sink=1, k_scale=True)
    held = 512
    want = 2 * held * 96 * bits / 8 + 2 * (held // 32) * 96 * 4 + 2 * (128 + 31) * 96 * 2 + 4 * held + 2 * 256 * 2
    assert cache_bytes([lat], 4096, batch=3) == 3 * want
    # the spec's leading bf16 columns
    lead = LayerLayout(FULL, FULL, None, f"int{bits}:group=32,recent=16,sink=4")
    assert cache_bytes([lead], n) == cache_bytes([lay], n) + 4 * 2 * 256 * 2
    # a short context: the window holds every token, the partial group has its scales
    assert cache_bytes([lay], 5) == 2 * 5 * 256 * bits / 8 + 256 * 4 + 5 * 8 * 4 + 2 * 5 * 256 * 2


def test_grouped_kv_fraction_at_32k_gemma():
    from tpa_compress.load.ckpt import variant_config

    cfg = variant_config("270m")
    base = cache_bytes(original_layouts(cfg, "bf16"), 32768)
    frac = cache_bytes(original_layouts(cfg, "int4:recent=0"), 32768) / base
    assert abs(frac - 5 / 16) < 0.01  # 5 bits of 16, a little more for the window and partial groups
    with_recent, without = original_layouts(cfg, "int4"), original_layouts(cfg, "int4:recent=0")
    assert cache_bytes(with_recent, 32768) > cache_bytes(without, 32768)


def test_specs_round_trip_through_config():
    lay = LayerLayout(FULL, LAT, 512, "int3:group=16,recent=0,rotate=hadamard")
    d = lay.to_dict()
    assert d["cache_dtype"] == "int3"
    assert d["cache"] == {"group": 16, "recent": 0, "rotate": "hadamard", "values": "auto", "sink": 1}
    assert LayerLayout.from_dict(d) == lay and lay.cache_dtype == "int3:group=16,recent=0,rotate=hadamard"
    assert "cache" not in LayerLayout(FULL, FULL, None, "int8").to_dict()
    assert LayerLayout(FULL, FULL, None, "int4:group=32").cache_dtype == "int4"  # defaults drop out


@pytest.mark.parametrize(
    "raw,needles",
    [
        ({"cache_dtype": "int5"}, ["cache_dtype 'int5' is not valid", "int4"]),
        ({"cache": {"dtype": "int4", "group": 0}}, ["cache: group 0 is not valid", ">= 1"]),
        ({"cache": {"dtype": "int4", "recent": -1}}, ["cache: recent -1 is not valid"]),
        ({"cache": {"dtype": "int4", "rotate": "random"}}, ["cache: rotate 'random'", "none, hadamard"]),
        ({"cache": {"dtype": "int8", "group": 8}}, ["cache: group is not valid for int8"]),
        ({"cache": {"dtype": "int4", "size": 8}}, ["cache: unknown key 'size'"]),
        ({"cache": {"group": 8}}, ["cache: missing key 'dtype'"]),
        ({"cache": {"dtype": "int4"}, "cache_dtype": "int8"}, ["not both"]),
    ],
)
def test_recipe_cache_errors(raw, needles):
    with pytest.raises(TPAError) as e:
        parse_recipe({"layers": RULES, **raw}, "r.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("r.yaml: ")
    for n in needles:
        assert n in msg, msg


def test_recipe_cache_group_must_divide_the_window():
    rec = parse_recipe({"layers": RULES, "cache": {"dtype": "int4", "group": 3}}, "r.yaml")
    assert rec.cache_dtype == "int4:group=3"
    with pytest.raises(TPAError, match=r"r.yaml: cache: cache group 3 does not divide .* window 8"):
        validate_for_model(rec, tiny_config("gemma3"))
    rec = parse_recipe({"layers": RULES, "cache": {"dtype": "int4", "group": 8, "values": "token"}}, "r.yaml")
    validate_for_model(rec, tiny_config("gemma3"))
    with pytest.raises(TPAError, match="cache group 8 does not divide the latent V width 12"):
        LayerLayout(FULL, Component("latent", 1, 256, 12), None, "int4:group=8,values=token")


def test_cli_spec_errors():
    for bad, needle in [("int4:group", "not key=value"), ("int4:group=x", "group 'x' is not valid")]:
        with pytest.raises(TPAError, match=needle):
            parse_spec(bad)


def test_hadamard_is_orthogonal_and_deterministic():
    x = torch.randn(2, 3, 96, generator=torch.Generator().manual_seed(1))
    assert rotation_block(96, 96) == 32 and rotation_block(256, 256) == 256 and rotation_block(7, 7) == 1
    y = rotate(x, 32)
    assert torch.allclose(unrotate(y, 32), x, atol=1e-5)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-4)
    assert torch.equal(y, rotate(x, 32)) and not torch.allclose(y, x)


@pytest.mark.parametrize("bits", [4, 3, 2])
def test_grouped_quantization_error_is_bounded_per_group(bits):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 70, 48, generator=g) * torch.logspace(-2, 2, 48)  # channels of very different scales
    spec = parse_spec(f"int{bits}:group=16,sink=0")
    k = fake_quantize_tokens(x, spec, "channel", 1)
    body = x[:, :64].reshape(2, 4, 16, 48)
    step = (body.amax(2) - body.amin(2)) / (2**bits - 1)  # per channel and group of tokens
    err = (k[:, :64] - x[:, :64]).abs().reshape(2, 4, 16, 48)
    assert (err <= step[:, :, None] / 2 * 1.01 + 1e-3).all()
    assert torch.equal(k[:, 64:], x[:, 64:])  # the partial group is never read quantized
    v = fake_quantize_tokens(x, spec, "token", 1)
    vs = x.reshape(2, 70, 3, 16)
    step = (vs.amax(-1) - vs.amin(-1)) / (2**bits - 1)
    assert ((v - x).abs().reshape(2, 70, 3, 16) <= step[..., None] / 2 * 1.01 + 1e-3).all()


def test_quantized_read_rule():
    spec = parse_spec("int4:group=4,recent=2,sink=0")
    t = torch.arange(12)[:, None]
    j = torch.arange(12)[None]
    m = quantized_read(spec, j, t) & (j <= t)
    # at t, tokens of groups whose last token is <= t - 2 are quantized
    assert m[5].tolist() == [True] * 4 + [False] * 8
    assert m[4].sum() == 0 and m[8].sum() == 4 and m[9].sum() == 8 and m[11].sum() == 8
    unq = (~m & (j <= t)).sum(1)
    assert ((unq[2:] >= 2) & (unq[2:] <= 2 + 4 - 1)).all()  # the window holds R .. R+G-1 tokens
    assert quantized_read(parse_spec("int8"), j, t).all()
    m = quantized_read(parse_spec("int4:group=4,recent=2,sink=1"), j, t) & (j <= t)
    assert m[5].tolist() == [False] + [True] * 3 + [False] * 8  # the leading column stays exact


def test_spec_lists_split_between_formats_not_parameters():
    from tpa_compress.cache_formats import split_specs

    assert split_specs("bf16,int3:group=64,recent=32,int4, int3:sink=1") == [
        "bf16",
        "int3:group=64,recent=32",
        "int4",
        "int3:sink=1",
    ]
    assert [parse_spec(s).name for s in split_specs("int4:recent=128,int2:group=64")] == ["int4", "int2:group=64"]


def test_grouped_formats_keep_the_first_token_out_by_default():
    """sink=1 is the default: the first token column (Gemma's BOS, an outlier) stays bf16, out
    of its group's statistics, and is priced as one bf16 token of each component."""
    spec = parse_spec("int3")
    assert spec.sink == 1 and spec.name == "int3" and parse_spec("int3:sink=0").name == "int3:sink=0"
    lay, off = LayerLayout(FULL, FULL, None, "int3:recent=0"), LayerLayout(FULL, FULL, None, "int3:recent=0,sink=0")
    assert cache_bytes([lay], 1000) - cache_bytes([off], 1000) == 2 * 256 * 2
    x = torch.randn(1, 64, 8, generator=torch.Generator().manual_seed(0))
    x[:, 0] *= 100  # an outlier first token
    with_sink, without = (fake_quantize_tokens(x, parse_spec(s), "channel", 1) for s in ("int3", "int3:sink=0"))
    assert (with_sink[:, 1:32] - x[:, 1:32]).abs().max() < (without[:, 1:32] - x[:, 1:32]).abs().max() / 10
