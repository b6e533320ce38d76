"""Embed rolecall in an async service: run Redis, make it redundant, tear down.

Run with a Docker engine on the local socket:  python examples/embed_redis.py
"""

import anyio

import rolecall


async def main() -> None:
    image = await rolecall.ensure_image("redis")  # built once, then reused
    async with rolecall.open_control_plane() as plane:
        await plane.apply(rolecall.ServiceSpec(name="sessions", image=image))
        status = await plane.wait_converged("sessions", timeout=120)
        print("standalone:", status.primary, "at", status.writer.published)

        status = await plane.convert("sessions", rolecall.Topology.REDUNDANT)
        for member in status.members:
            print(f"  {member.id}: {member.role} published at {member.published}")

        await plane.remove("sessions")  # containers, volumes and network


if __name__ == "__main__":
    anyio.run(main)
