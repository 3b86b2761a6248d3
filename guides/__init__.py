"""Pyro guides, importable on their own; each takes the same arguments as its model."""
from .dsa import DSAGuide
from .srvp import SRVPGuide
from .svg import SVGGuide
from .vdsm import VDSMStage1Guide, VDSMStage2Guide

__all__ = ["VDSMStage1Guide", "VDSMStage2Guide", "SVGGuide", "SRVPGuide", "DSAGuide"]
