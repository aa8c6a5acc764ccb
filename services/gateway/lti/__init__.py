"""ClassPulse as an LTI 1.3 tool: OIDC login initiation, ``id_token`` launch, role mapping.

An LMS (Canvas, Moodle, Blackboard, ...) registered in ``CLASSPULSE_LTI_PLATFORMS_FILE`` starts a
launch at ``/lti/login``; ClassPulse redirects the browser to the platform's OIDC endpoint with a
signed ``state`` and a ``nonce``; the platform posts an ``id_token`` to ``/lti/launch``, which is
checked against the platform's JWKS (PyJWT) and turned into a ClassPulse token: instructors land on
the dashboard, learners on the join page of the course's session. See docs/integration.md.
"""
