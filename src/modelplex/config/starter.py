"""The starter config written by `modelplex init`."""

STARTER = """\
# modelplex.yaml: a starter config. Every key is described in docs/config.md.
# Secrets are read from the environment with ${NAME}; `modelplex check-config modelplex.yaml`
# validates this file and prints it resolved, secrets redacted.

server:
  host: 127.0.0.1
  port: 8080
  # A separate credential for the /admin API and the dashboard.
  # admin_key: ${MODELPLEX_ADMIN_KEY}

# Keys your applications send as `Authorization: Bearer <key>` (or `x-api-key`).
keys:
  - name: default
    key: ${MODELPLEX_KEY}
    team: default

# A deployment is one upstream model at one provider, with its credentials. Prices come from the
# catalog shipped with modelplex (per 1M tokens); set `price:` to override them.
deployments:
  - name: openai-mini
    provider: openai
    model: gpt-5-mini
    api_key: ${OPENAI_API_KEY}
    capabilities: {context_window: 400000, tools: true, json_schema: true, vision: true}

  - name: anthropic-haiku
    provider: anthropic
    model: claude-haiku-4-5
    api_key: ${ANTHROPIC_API_KEY}
    capabilities: {context_window: 200000, tools: true, json_schema: false, vision: true, prefill: true}

# A model is the public name your applications ask for: a pool of deployments, tried in order,
# then its fallback models. Switching providers is an edit here, never in your application.
models:
  - name: fast
    deployments: [openai-mini]
    fallbacks: [fast-anthropic]

  - name: fast-anthropic
    deployments: [anthropic-haiku]
"""
