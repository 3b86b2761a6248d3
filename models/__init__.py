"""Pyro models of the hierarchical state-space family, each declared by its ``SPEC``
(``models.spec``); ``models.registry`` lists them and loads any run folder."""
from .cdsvae import CDSVAEConfig, CDSVAEModel, CDSVAENets, CDSVAERun
from .dbse import DBSEConfig, DBSEModel, DBSENets, DBSERun
from .dsa import DSAConfig, DSAModel, DSANets, DSARun
from .family import StateSpaceVideoModel
from .registry import MODELS, get, load_run
from .spec import ModelSpec, StaticLatentRun, Stage, VideoRun
from .spyl import SPYLConfig, SPYLModel, SPYLNets, SPYLRun
from .srvp import SRVPConfig, SRVPModel, SRVPNets, SRVPRun
from .svg import SVGConfig, SVGModel, SVGNets, SVGRun
from .vdsm import VDSMConfig, VDSMRun, VDSMStage1Model, VDSMStage2Model

__all__ = ["StateSpaceVideoModel", "ModelSpec", "Stage", "VideoRun", "StaticLatentRun", "MODELS", "get", "load_run",
           "VDSMConfig", "VDSMStage1Model", "VDSMStage2Model", "VDSMRun",
           "SVGConfig", "SVGNets", "SVGModel", "SVGRun",
           "SRVPConfig", "SRVPNets", "SRVPModel", "SRVPRun",
           "DSAConfig", "DSANets", "DSAModel", "DSARun",
           "CDSVAEConfig", "CDSVAENets", "CDSVAEModel", "CDSVAERun", "DBSEConfig", "DBSENets", "DBSEModel", "DBSERun",
           "SPYLConfig", "SPYLNets", "SPYLModel", "SPYLRun"]
