"""Engines that run a segmentation job over many machines: Apache Beam
(`beam`: DirectRunner, Dataflow, Flink, Spark) and Ray Data (`ray`). Both
share `inference.jobs` (inputs, outputs, manifest) and `inference.batch`
(the model calls), so their masks equal single-process `predict`'s."""
