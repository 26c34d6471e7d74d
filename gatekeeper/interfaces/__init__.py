"""The ways in: the gate in front of a backend (:mod:`~gatekeeper.interfaces.wrapper`, with
:mod:`~gatekeeper.interfaces.openai_backend`), the OpenAI-compatible gating proxy
(:mod:`~gatekeeper.interfaces.proxy`) and the LangChain runnable
(:mod:`~gatekeeper.interfaces.langchain`).

Each is a thin layer over :class:`gatekeeper.Gatekeeper`; the core never imports this package.
The public names are re-exported from :mod:`gatekeeper`; the modules here are internal.
"""
