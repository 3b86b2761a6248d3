"""vdsm: disentangled sequential generative models of video, on Pyro (the model-agnostic core).

``__version__`` is recorded in every run folder's config.json (``vdsm_version``); the commands read run
folders of this version only (``vdsm.runfolder.read_config_json``).
"""
__version__ = "0.2.0"
