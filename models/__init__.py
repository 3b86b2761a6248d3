"""Pyro models of the hierarchical state-space family."""
from .family import StateSpaceVideoModel
from .srvp import SRVPConfig, SRVPModel, SRVPNets
from .svg import SVGConfig, SVGModel, SVGNets
from .vdsm import VDSMConfig, VDSMStage1Model, VDSMStage2Model

__all__ = ["StateSpaceVideoModel", "VDSMConfig", "VDSMStage1Model", "VDSMStage2Model", "SVGConfig", "SVGNets",
           "SVGModel",
           "SRVPConfig", "SRVPNets", "SRVPModel"]
