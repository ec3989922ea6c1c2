"""A real SCIM client (scim2-client from PyPI, which builds its models from the server's /Schemas
and validates every response against them) provisioning a workspace through the gateway's SCIM
endpoint: discovery, users, filters, paging, groups, deactivation, reactivation, membership and
deletion, as tests/e2e/scim.rs drives it.

    python scim_client.py BASE_URL TOKEN

After each step that changes what a member may do it prints one JSON line {"step": ...} and waits
for a line on stdin, so the test can check the member's credentials and tools in between. Any
response the client finds invalid raises, and the script exits non-zero.
"""

import json
import sys

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import PatchOp, PatchOperation, SCIMException, SearchRequest


def step(name, **fields):
    print(json.dumps({"step": name, **fields}), flush=True)
    if sys.stdin.readline() == "":
        sys.exit("the test went away")


def main():
    base, token = sys.argv[1], sys.argv[2]
    http = httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
    scim = SyncSCIMClient(http)
    scim.discover()
    User = scim.get_resource_model("User")
    Group = scim.get_resource_model("Group")
    assert User is not None and Group is not None, "User and Group discovered"
    assert scim.provider.config.patch.supported

    user = scim.create(
        User(
            user_name="bjensen@example.com",
            active=True,
            display_name="Barbara Jensen",
            name=User.Name(given_name="Barbara", family_name="Jensen"),
            emails=[User.Emails(value="bjensen@example.com", type="work", primary=True)],
        )
    )
    assert user.id and user.active is True and user.name.family_name == "Jensen"
    step("created", id=user.id, userName=user.user_name)

    found = scim.query(User, query_parameters=SearchRequest(filter='userName eq "BJensen@example.com"'))
    assert found.total_results == 1 and found.resources[0].id == user.id, found
    for i in range(3):
        scim.create(User(user_name=f"user{i}@example.com"))
    page = scim.query(User, query_parameters=SearchRequest(start_index=2, count=2))
    assert page.total_results == 4 and page.start_index == 2 and len(page.resources) == 2, page
    assert [u.user_name for u in page.resources] == ["user0@example.com", "user1@example.com"]

    group = scim.create(Group(display_name="Engineering", members=[Group.Members(value=user.id)]))
    assert [m.value for m in group.members] == [user.id]
    step("grouped", group=group.id)

    user.active = False
    off = scim.replace(user)
    assert off.active is False and off.emails[0].value == "bjensen@example.com"
    step("deactivated")

    on = scim.modify(
        User,
        user.id,
        PatchOp[User](operations=[PatchOperation(op=PatchOperation.Op.replace_, path="active", value=True)]),
    )
    assert on is None or on.active is True, on
    assert scim.query(User, user.id).active is True
    step("reactivated")

    scim.modify(
        Group,
        group.id,
        PatchOp[Group](
            operations=[PatchOperation(op=PatchOperation.Op.remove, path=f'members[value eq "{user.id}"]')]
        ),
    )
    assert not scim.query(Group, group.id).members
    step("ungrouped")

    scim.delete(User, user.id)
    try:
        scim.query(User, user.id)
        raise AssertionError("a deleted user is still there")
    except SCIMException as e:
        assert "404" in str(e.to_error().status), e
    step("deleted")


if __name__ == "__main__":
    main()
