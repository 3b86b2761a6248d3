"""Pyro guides, importable on their own; each takes the same arguments as its model."""
from .cdsvae import CDSVAEGuide
from .dbse import DBSEGuide
from .dsa import DSAGuide
from .spyl import SPYLGuide
from .srvp import SRVPGuide
from .svg import SVGGuide
from .vdsm import VDSMStage1Guide, VDSMStage2Guide

__all__ = ["VDSMStage1Guide", "VDSMStage2Guide", "SVGGuide", "SRVPGuide", "DSAGuide", "CDSVAEGuide", "DBSEGuide", "SPYLGuide"]
