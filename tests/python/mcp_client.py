"""Drive an MCP endpoint with the official Python SDK (`mcp` from PyPI) and report what it saw.

    python mcp_client.py --url URL --token TOKEN --revision 2026-07-28|2025-11-25 \
        --allowed NAME --allowed-args JSON --denied NAME --denied-args JSON --ungranted NAME

Connects over Streamable HTTP with `Authorization: Bearer TOKEN` at the given revision
(2025-11-25: the initialize handshake, `mode="legacy"`; 2026-07-28: the stateless revision,
pinned with `mode="2026-07-28"`), then lists the tools, calls an allowed tool, a tool a call-phase
policy denies and a tool the token is not granted. Every step is run even when an earlier one
failed; each step's outcome (or the exact exception the SDK raised, validation errors included)
goes into one JSON report on stdout. At 2026-07-28 two more steps check what a default client
does: `discover` (`server/discover`, validated and adopted) and `connect_auto` (`mode="auto"`, the
SDK's default, and the version it settles on).

The exit code is 0 whenever the report was printed: judging it is the caller's business.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

TIMEOUT_SECONDS = 20.0


def describe(exc: BaseException) -> dict[str, Any]:
    """An exception as JSON: its type, its text and, for an MCP error, the JSON-RPC error."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    out: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, MCPError):
        out["code"] = exc.code
        out["data"] = exc.data
    elif isinstance(exc, ValidationError):
        out["title"] = exc.title
        out["errors"] = [
            {"loc": [str(p) for p in e["loc"]], "type": e["type"], "msg": e["msg"]} for e in exc.errors()
        ]
    elif isinstance(exc, BaseExceptionGroup):
        out["exceptions"] = [describe(e) for e in exc.exceptions]
    else:
        out["traceback"] = traceback.format_exception(exc)[-3:]
    return out


def call_result(result: mcp_types.CallToolResult) -> dict[str, Any]:
    texts = [c.text for c in result.content if isinstance(c, mcp_types.TextContent)]
    return {
        "ok": True,
        "is_error": result.is_error,
        "text": "\n".join(texts),
        "content_types": [c.type for c in result.content],
        "structured": result.structured_content,
    }


def client(url: str, token: str, mode: str) -> tuple[Client, httpx2.AsyncClient]:
    """A client for `url` sending the bearer token; the transport does not close an HTTP client it
    was handed, so the caller closes the second half."""
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(TIMEOUT_SECONDS),
    )
    transport = streamable_http_client(url, http_client=http)
    return Client(transport, mode=mode, read_timeout_seconds=TIMEOUT_SECONDS), http


async def step(steps: dict[str, Any], name: str, fn: Any) -> None:
    """Runs one step, recording its outcome or the exception it raised under `name`."""
    try:
        with anyio.fail_after(TIMEOUT_SECONDS + 5):
            steps[name] = await fn()
    except Exception as exc:  # noqa: BLE001 - every failure is part of the report
        steps[name] = {"ok": False, "error": describe(exc)}


async def session_steps(c: Client, args: argparse.Namespace, modern: bool, steps: dict[str, Any]) -> None:
    if modern:

        async def discover() -> dict[str, Any]:
            # `session.discover()` would answer the result the pinned mode synthesized: send the
            # probe itself and validate the answer the way `mode="auto"` does.
            raw = await c.session.send_discover(args.revision)
            r = mcp_types.DiscoverResult.model_validate(raw)
            return {"ok": True, "supported_versions": r.supported_versions}

        await step(steps, "discover", discover)

    async def list_tools() -> dict[str, Any]:
        names: list[str] = []
        cursor: str | None = None
        for _ in range(100):
            page = await c.list_tools(cursor=cursor, cache_mode="refresh")
            names.extend(t.name for t in page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return {"ok": True, "tools": sorted(names)}

    await step(steps, "list_tools", list_tools)

    async def call(name: str, arguments: str) -> dict[str, Any]:
        return call_result(await c.call_tool(name, json.loads(arguments)))

    await step(steps, "call_allowed", lambda: call(args.allowed, args.allowed_args))
    await step(steps, "call_denied", lambda: call(args.denied, args.denied_args))
    await step(steps, "call_ungranted", lambda: call(args.ungranted, args.ungranted_args))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    modern = args.revision in MODERN_PROTOCOL_VERSIONS
    mode = args.revision if modern else "legacy"
    steps: dict[str, Any] = {}
    report: dict[str, Any] = {
        "sdk": {"mcp": version("mcp"), "mcp-types": version("mcp-types")},
        "url": args.url,
        "revision": args.revision,
        "mode": mode,
        "steps": steps,
    }
    c, http = client(args.url, args.token, mode)
    try:
        async with c:
            steps["connect"] = {"ok": True, "protocol_version": c.protocol_version}
            await session_steps(c, args, modern, steps)
    except Exception as exc:  # noqa: BLE001 - every failure is part of the report
        # Before `connect` is set the handshake failed; after it, closing the session did.
        steps["close" if "connect" in steps else "connect"] = {"ok": False, "error": describe(exc)}
    finally:
        await http.aclose()

    if modern:
        # What a client left at the SDK's default does: probe server/discover, fall back to
        # initialize when the probe fails or its result does not validate.
        auto, auto_http = client(args.url, args.token, "auto")

        async def connect_auto() -> dict[str, Any]:
            async with auto:
                return {"ok": True, "protocol_version": auto.protocol_version}

        try:
            await step(steps, "connect_auto", connect_auto)
        finally:
            await auto_http.aclose()
    return report


def version(dist: str) -> str:
    from importlib.metadata import version as v

    return v(dist)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--revision", required=True, choices=["2025-11-25", "2026-07-28"])
    p.add_argument("--allowed", required=True)
    p.add_argument("--allowed-args", default="{}")
    p.add_argument("--denied", required=True)
    p.add_argument("--denied-args", default="{}")
    p.add_argument("--ungranted", required=True)
    p.add_argument("--ungranted-args", default="{}")
    args = p.parse_args()
    report = anyio.run(run, args)
    json.dump(report, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
