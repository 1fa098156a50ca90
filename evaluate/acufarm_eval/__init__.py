"""acufarm's training-based evaluation: AcuSim's example network trained on original, augmented
and both, compared on original test models. Driven by `acufarm evaluate`; see evaluate/README.md."""
