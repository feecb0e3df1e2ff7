#!/usr/bin/python3
"""Generates tests/data/torch_ref_<name>.txt: reference losses and gradients of tiny VAEs computed by PyTorch
in float64, which tests/test_torch_ref.cc compares with the CPU backend (no PyTorch needed at test time).

Run with Debian's python3-torch:  /usr/bin/python3 scripts/make_torch_ref.py [OUTDIR]   (default tests/data)

Each model mirrors cuvae's layout (include/cuvae/model.h): nn.Linear layers (weight [out, in], bias [out])
named enc.0 .. enc.{k-1}, enc.mu, enc.lv, dec.0 .. dec.{k-1}, dec.out. The loss is the batch mean of
recon_b + kl_b, with recon from torch's own functions (binary_cross_entropy_with_logits for Bernoulli,
distributions.Normal(f, sigma).log_prob for Gaussian) and the closed-form KL to N(0, I). Weights, x and eps are drawn in float64 and rounded to float32 values, so
the test feeds cuvae exactly the inputs torch used.

File format (text, one record per line, numbers written with %.17g; '#' lines are comments):
  config KEY VALUE...        likelihood (bernoulli|gaussian), activation (relu|tanh), hidden (widths, input
                             side first), latent, input_dim, batch, sigma (the float32 value, as a double)
  scalar NAME VALUE          nelbo, recon, kl (batch means)
  data NAME COUNT V...       x [batch*input_dim], eps [batch*latent], row-major
  param NAME COUNT V...      a parameter tensor under cuvae's name, row-major [out][in]
  grad NAME COUNT V...       d nelbo / d that tensor
"""
import os
import struct
import sys

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

ARCHS = {
    # name: likelihood, activation, hidden, latent Z, input D, batch B, sigma, seed
    "a": dict(likelihood="bernoulli", activation="relu", hidden=[5, 4], latent=3, input_dim=7, batch=4,
              sigma=1.0, seed=1),
    "b": dict(likelihood="gaussian", activation="tanh", hidden=[6], latent=2, input_dim=5, batch=3,
              sigma=0.7, seed=2),
}

# ReLU pre-activations closer to 0 than this could change sign in cuvae's float32 forward, and the
# gradient would then differ for a legitimate reason; the script refuses such a draw.
KINK_MARGIN = 1e-3


def f32(v):
    """The double closest to the float32 rounding of v (what cuvae holds in its float sigma)."""
    return struct.unpack("f", struct.pack("f", v))[0]


def build_layers(a):
    """Ordered {cuvae name: nn.Linear}, encoder then decoder, in cuvae's layout order."""
    hidden, Z, D = a["hidden"], a["latent"], a["input_dim"]
    layers = {}
    prev = D
    for i, h in enumerate(hidden):
        layers[f"enc.{i}"] = torch.nn.Linear(prev, h)
        prev = h
    layers["enc.mu"] = torch.nn.Linear(prev, Z)
    layers["enc.lv"] = torch.nn.Linear(prev, Z)
    prev = Z
    for i, h in enumerate(reversed(hidden)):
        layers[f"dec.{i}"] = torch.nn.Linear(prev, h)
        prev = h
    layers["dec.out"] = torch.nn.Linear(prev, D)
    return layers


def tensor_order(a):
    """cuvae's tensor names in layout order (the heads' weights before their biases)."""
    k = len(a["hidden"])
    names = []
    for i in range(k):
        names += [f"enc.{i}.weight", f"enc.{i}.bias"]
    names += ["enc.mu.weight", "enc.lv.weight", "enc.mu.bias", "enc.lv.bias"]
    for i in range(k):
        names += [f"dec.{i}.weight", f"dec.{i}.bias"]
    names += ["dec.out.weight", "dec.out.bias"]
    return names


def forward(a, layers, x, eps, pre_acts):
    act = torch.relu if a["activation"] == "relu" else torch.tanh
    k = len(a["hidden"])

    def hidden_layer(name, h):
        pre = layers[name](h)
        pre_acts.append(pre.detach())
        return act(pre)

    h = x
    for i in range(k):
        h = hidden_layer(f"enc.{i}", h)
    mu, lv = layers["enc.mu"](h), layers["enc.lv"](h)
    z = mu + torch.exp(0.5 * lv) * eps
    h = z
    for i in range(k):
        h = hidden_layer(f"dec.{i}", h)
    f = layers["dec.out"](h)
    if a["likelihood"] == "bernoulli":
        recon = F.binary_cross_entropy_with_logits(f, x, reduction="none").sum(1)
    else:
        recon = -torch.distributions.Normal(f, a["sigma"]).log_prob(x).sum(1)
    kl = 0.5 * (mu * mu + torch.exp(lv) - 1.0 - lv).sum(1)
    return recon.mean(), kl.mean()


def fmt(values):
    return " ".join("%.17g" % v for v in values)


def make(name, a, outdir):
    a = dict(a)
    a["sigma"] = f32(a["sigma"])
    torch.manual_seed(a["seed"])
    layers = build_layers(a)
    B, D, Z = a["batch"], a["input_dim"], a["latent"]
    # Every input is rounded to float32 first, so that the values cuvae parses are exactly the ones torch used
    # and the comparison measures cuvae's float32 arithmetic only.
    with torch.no_grad():
        for lin in layers.values():
            lin.weight.copy_(lin.weight.float().double())
            lin.bias.copy_(lin.bias.float().double())
    x = torch.rand(B, D).float().double()
    eps = torch.randn(B, Z).float().double()

    pre_acts = []
    recon, kl = forward(a, layers, x, eps, pre_acts)
    nelbo = recon + kl
    nelbo.backward()
    if a["activation"] == "relu":
        margin = min(p.abs().min().item() for p in pre_acts)
        if margin < KINK_MARGIN:
            sys.exit(f"{name}: a ReLU pre-activation is {margin:.3g} from 0; pick another seed")

    params = {}
    for lname, lin in layers.items():
        params[f"{lname}.weight"] = lin.weight
        params[f"{lname}.bias"] = lin.bias

    lines = [
        f"# cuvae reference from PyTorch {torch.__version__} (float64), scripts/make_torch_ref.py, arch {name}",
        "# records: config KEY VALUE... | scalar NAME V | data NAME COUNT V... | param NAME COUNT V... |"
        " grad NAME COUNT V...",
        f"config likelihood {a['likelihood']}",
        f"config activation {a['activation']}",
        "config hidden " + " ".join(str(h) for h in a["hidden"]),
        f"config latent {Z}",
        f"config input_dim {D}",
        f"config batch {B}",
        f"config sigma {a['sigma']:.17g}",
        f"scalar nelbo {nelbo.item():.17g}",
        f"scalar recon {recon.item():.17g}",
        f"scalar kl {kl.item():.17g}",
        f"data x {x.numel()} {fmt(x.flatten().tolist())}",
        f"data eps {eps.numel()} {fmt(eps.flatten().tolist())}",
    ]
    for tname in tensor_order(a):
        t = params[tname]
        lines.append(f"param {tname} {t.numel()} {fmt(t.detach().flatten().tolist())}")
    for tname in tensor_order(a):
        g = params[tname].grad
        lines.append(f"grad {tname} {g.numel()} {fmt(g.flatten().tolist())}")

    path = os.path.join(outdir, f"torch_ref_{name}.txt")
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")
    print(f"{path}: nelbo {nelbo.item():.6f} (recon {recon.item():.6f}, kl {kl.item():.6f}), "
          f"{os.path.getsize(path)} bytes")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(os.path.join(here, "..", "tests", "data"))
    os.makedirs(outdir, exist_ok=True)
    for name, a in ARCHS.items():
        make(name, a, outdir)


if __name__ == "__main__":
    main()
