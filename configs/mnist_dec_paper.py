"""DEC on MNIST with the DEC paper's recipe (Xie et al. 2016, section 4.3).

Greedy layer-wise denoising pretraining (dropout 0.2), SGD lr 0.1, momentum 0.9, lr / 10 every
20k steps, 50k steps per layer pair, then 100k steps of end-to-end fine-tuning, batch 256.
On a 2-core CPU this takes hours per seed (see docs/results.md).

Run:
  python main.py --config=configs/mnist_dec_paper.py --workdir=workdirs/mnist_dec_paper/seed0
"""

from configs import dec_base, mnist_dec


def get_config(arg=None):
    c = mnist_dec.get_config()
    c.sae.optimizer = "sgd"
    c.sae.lr = 0.1
    c.sae.momentum = 0.9
    c.sae.lr_decay_every = 20000
    c.sae.lr_decay = 0.1
    c.sae.layerwise_steps = 50000
    c.sae.finetune_steps = 100000
    if arg == "smoke":
        dec_base.shrink_for_smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
