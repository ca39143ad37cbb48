"""The quick-start snippets of a project: its real key id and this server's URLs, never a
secret (that is shown once, at key creation, and lives only in the customer's back end)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Snippet", "env_file", "snippets"]


@dataclass(frozen=True, slots=True)
class Snippet:
    id: str
    title: str
    language: str
    code: str


def env_file(api_key: str, api_secret: str) -> str:
    """The ``.env`` a new key is offered as: the variables ``pulsebeam token create`` reads."""
    return f"PULSEBEAM_API_KEY={api_key}\nPULSEBEAM_API_SECRET={api_secret}\n"


def snippets(server_url: str, api_key: str | None) -> list[Snippet]:
    kid = api_key or "kid_…  # create a key first"
    grpc = f"{server_url}/grpc"
    return [
        Snippet(
            "env",
            "1. Your back end's environment",
            "sh",
            f"PULSEBEAM_API_KEY={kid}\n"
            "PULSEBEAM_API_SECRET=sk_…  # shown once when you created the key\n",
        ),
        Snippet(
            "python-token",
            "2. Mint a token for each end user (Python server SDK)",
            "python",
            "import os\n\n"
            "from pulsebeam import AccessToken, PeerClaims, PeerPolicy\n\n"
            'claims = PeerClaims("room1", "alice")  # group and peer id of this user\n'
            'claims.set_allow_policy(PeerPolicy("room1", "*"))  # whom they may reach\n'
            "token = AccessToken(\n"
            '    os.environ["PULSEBEAM_API_KEY"], os.environ["PULSEBEAM_API_SECRET"]\n'
            ").create_token(claims, 3600)  # valid for one hour\n",
        ),
        Snippet(
            "browser",
            "3a. Connect from a browser",
            "js",
            f'import {{ createPeer }} from "{server_url}/sdk/pulsebeam-peer.js";\n\n'
            "// Fetch the token your back end minted for this user (step 2).\n"
            'const token = await (await fetch("/your-token-endpoint")).text();\n'
            f'const peer = await createPeer({{ token, baseUrl: "{grpc}" }});\n'
            "peer.onsession = (session) => { /* add tracks, data channels */ };\n"
            "peer.start();\n"
            'peer.connect("room1", "bob", AbortSignal.timeout(30000));\n',
        ),
        Snippet(
            "python-peer",
            "3b. Or connect from Python (peer SDK)",
            "python",
            "from pulsebeam.peer import create_peer\n\n"
            "# token: minted by your back end for this peer (step 2)\n"
            f'peer = await create_peer(token, "{grpc}")\n'
            "peer.start()\n"
            'session = await peer.connect("room1", "bob")\n',
        ),
    ]
