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

# A deployment is one upstream model at one provider, with its credentials and prices
# (per 1M tokens, in the provider's currency).
deployments:
  - name: openai-mini
    provider: openai
    model: gpt-4o-mini
    api_key: ${OPENAI_API_KEY}
    price: {input: 0.15, output: 0.60, cached_input: 0.075}
    capabilities: {context_window: 128000, tools: true, json_schema: true, vision: true}

  - name: anthropic-haiku
    provider: anthropic
    model: claude-3-5-haiku-latest
    api_key: ${ANTHROPIC_API_KEY}
    price: {input: 0.80, output: 4.00, cached_input: 0.08, cache_write: 1.00}
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
