"""Pyro models of the hierarchical state-space family."""
from .family import StateSpaceVideoModel
from .vdsm import VDSMConfig, VDSMStage1Model, VDSMStage2Model

__all__ = ["StateSpaceVideoModel", "VDSMConfig", "VDSMStage1Model", "VDSMStage2Model"]
