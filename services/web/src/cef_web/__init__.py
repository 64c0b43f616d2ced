"""The CEF web app: the pages providers, CEF staff, finance, auditors and boards work in."""
