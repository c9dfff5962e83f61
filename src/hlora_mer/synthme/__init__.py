"""SynthME, the synthetic micro-expression benchmark: ``generate`` (clips and videos from one portrait),
``pretrain`` (the self-supervised pretraining of the packaged ``synthme_vit`` backbone) and ``demo`` (the
configuration of ``hlora-mer demo``)."""
