#!/usr/bin/python3
"""CuvaeVAE: the PyTorch module whose state_dict is what `cuvae export` writes, and `cuvae import` reads back.

Needs only PyTorch (Debian: python3-torch) and, for .npy directories and save_safetensors, NumPy; the
`safetensors` package is not needed: load_safetensors / save_safetensors below read and write the format.

    import sys; sys.path.insert(0, "scripts")
    from torch_vae_module import CuvaeVAE, load_safetensors

    tensors, meta = load_safetensors("fmnist.safetensors")   # (name -> tensor, __metadata__ strings)
    model = CuvaeVAE.from_metadata(meta)                      # the architecture recorded by cuvae
    model.load_state_dict(tensors)                            # strict: every name and shape must match
    mu, logvar = model.encode(x)                              # x: float32 [N, D]
    means = model.decode(mu)                                  # decoder means [N, D] (sigmoid for Bernoulli)

Or in one call: model = load_cuvae("fmnist.safetensors") (also accepts a `cuvae export --format npy` directory).

Names and shapes (nn.Linear: weight [out, in], bias [out]); k = len(hidden):
    encoder       nn.Sequential(Linear(D, h0), act, Linear(h0, h1), act, ...)   -> encoder.0, encoder.2, ...
    encoder_head  Linear(h_{k-1}, 2Z): output row = [mu | logvar]             -> encoder_head (mu rows first)
    decoder       nn.Sequential(Linear(Z, h_{k-1}), act, ..., Linear(h0, D))   -> decoder.0, ..., decoder.{2k}
    decoder_logvar  [1], only with gaussian_variance = learned_shared: the shared log-variance (cuvae's dec.logvar)
cuvae's enc.i / dec.i are encoder.{2i} / decoder.{2i}; its enc.mu + enc.lv are encoder_head; dec.out is
decoder.{2k}. The decoder outputs logits (Bernoulli) or means (Gaussian with fixed sigma, or with the learned
shared variance exp(decoder_logvar)). docs/EXPORT.md has the table.

Command line (a quick look at an export):  /usr/bin/python3 scripts/torch_vae_module.py MODEL
"""
import json
import math
import os
import struct
import sys

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class CuvaeVAE(nn.Module):
    """Dense VAE with cuvae's architecture: encoder -> (mu, logvar) head, decoder mirroring the encoder."""

    def __init__(self, input_dim, hidden, latent, likelihood="bernoulli", sigma=1.0, activation="relu",
                 gaussian_variance="fixed"):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be bernoulli or gaussian, not {likelihood!r}")
        if gaussian_variance not in ("fixed", "learned_shared"):
            raise ValueError(f"gaussian_variance must be fixed or learned_shared, not {gaussian_variance!r}")
        act = ACTIVATIONS[activation]
        self.input_dim, self.hidden, self.latent = int(input_dim), [int(h) for h in hidden], int(latent)
        self.likelihood, self.sigma, self.activation = likelihood, float(sigma), activation
        layers, prev = [], self.input_dim
        for h in self.hidden:
            layers += [nn.Linear(prev, h), act()]
            prev = h
        self.encoder = nn.Sequential(*layers)
        self.encoder_head = nn.Linear(prev, 2 * self.latent)
        layers, prev = [], self.latent
        for h in reversed(self.hidden):
            layers += [nn.Linear(prev, h), act()]
            prev = h
        layers.append(nn.Linear(prev, self.input_dim))
        self.decoder = nn.Sequential(*layers)
        self.gaussian_variance = gaussian_variance
        if gaussian_variance == "learned_shared":  # cuvae's dec.logvar, initially log sigma^2
            self.decoder_logvar = nn.Parameter(torch.full([1], 2.0 * math.log(float(sigma))))
        self.cuvae_metadata = {}

    @classmethod
    def from_metadata(cls, meta):
        """The module described by an export's __metadata__ (kept as .cuvae_metadata for save_safetensors)."""
        hidden = [int(h) for h in meta["hidden"].split(",") if h.strip()]
        model = cls(int(meta["input_dim"]), hidden, int(meta["latent"]), meta["likelihood"],
                    float(meta["sigma"]), meta["activation"], meta.get("gaussian_variance", "fixed"))
        model.cuvae_metadata = dict(meta)
        return model

    def encode(self, x):
        """(mu, logvar) of q(z|x), each [N, Z]."""
        h = self.encoder_head(self.encoder(x))
        return h[:, :self.latent], h[:, self.latent:]

    def decode(self, z):
        """The decoder's mean [N, D]: sigmoid of the logits (Bernoulli) or the output itself (Gaussian)."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def forward(self, x, eps=None):
        """(decoder output: logits or means, mu, logvar) for z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)."""
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn_like(mu)
        return self.decoder(mu + torch.exp(0.5 * logvar) * eps), mu, logvar

    def negative_elbo(self, x, eps=None):
        """cuvae's training loss: batch mean of -log p(x|z) + KL(q(z|x) || N(0, I)), nats per data point."""
        out, mu, logvar = self(x, eps)
        if self.likelihood == "bernoulli":
            recon = nn.functional.binary_cross_entropy_with_logits(out, x, reduction="none").sum(1)
        elif self.gaussian_variance == "learned_shared":
            lv = self.decoder_logvar
            recon = (0.5 * ((x - out) ** 2 * torch.exp(-lv) + lv + math.log(2 * math.pi))).sum(1)
        else:
            s = self.sigma
            recon = (0.5 * ((x - out) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)).sum(1)
        kl = 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar).sum(1)
        return (recon + kl).mean()


def load_safetensors(path):
    """Reads a safetensors file of F32 tensors: returns ({name: tensor}, {__metadata__ key: string})."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: truncated safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} does not fit the file")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base, tensors = 8 + n, {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= len(data) - base:
            raise ValueError(f"{path}: tensor {name} has data_offsets out of range")
        t = torch.frombuffer(bytearray(data[base + begin:base + end]), dtype=torch.float32)
        if sys.byteorder != "little":  # the file is little-endian
            t = torch.from_numpy(t.numpy().byteswap())
        tensors[name] = t.reshape(info["shape"])
    return tensors, meta


def save_safetensors(tensors, path, metadata):
    """Writes {name: tensor} as F32 safetensors with string metadata (what `cuvae import` reads: pass the
    __metadata__ of the export, e.g. model.cuvae_metadata). Written to PATH.tmp, then renamed."""
    header, blobs, offset = {"__metadata__": {k: str(v) for k, v in metadata.items()}}, [], 0
    for name, t in tensors.items():
        raw = t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(js)) + js + b"".join(blobs))
    os.replace(path + ".tmp", path)


def load_npy_dir(path):
    """Reads a `cuvae export --format npy` directory: ({name: tensor}, metadata)."""
    import numpy as np
    with open(os.path.join(path, "metadata.json")) as f:
        info = json.load(f)
    tensors = {name: torch.from_numpy(np.load(os.path.join(path, t["file"])))
               for name, t in info["tensors"].items()}
    return tensors, info["__metadata__"]


def load_cuvae(path):
    """A CuvaeVAE with the parameters of a cuvae export (safetensors file or npy directory), in eval mode."""
    tensors, meta = load_npy_dir(path) if os.path.isdir(path) else load_safetensors(path)
    model = CuvaeVAE.from_metadata(meta)
    model.load_state_dict(tensors)
    return model.eval()


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) == 2 else 2)
    m = load_cuvae(sys.argv[1])
    print(f"CuvaeVAE(input_dim={m.input_dim}, hidden={m.hidden}, latent={m.latent}, likelihood={m.likelihood}, "
          f"sigma={m.sigma}, activation={m.activation}), trained {m.cuvae_metadata.get('step', '?')} steps")
    for name, t in m.state_dict().items():
        print(f"  {name:24s} {list(t.shape)}")
