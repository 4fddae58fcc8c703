"""The web UI's user routes (server/userdata.py): users, settings and user data files in ComfyUI's
shapes, with their bad inputs: traversal out of the user folder, unknown users, oversize bodies."""
import json

import pytest


@pytest.fixture
async def client(aiohttp_client, toy_app_factory, tmp_path):
    app = toy_app_factory(user_dir=tmp_path / "user", max_upload_size_mb=0.01)  # 10 KB bodies at most
    return await aiohttp_client(app.make_web_app())


async def test_users_single_user_then_created(client, tmp_path):
    assert await (await client.get("/api/users")).json() == {"storage": "server", "migrated": True}
    assert (await client.post("/api/users", data="not json")).status == 400
    missing = await client.post("/api/users", json={"name": "x"})
    assert missing.status == 400 and "username" in (await missing.json())["error"]
    user_id = await (await client.post("/api/users", json={"username": "Ada L."})).json()
    assert user_id.startswith("Ada-L-_")
    assert (await client.post("/api/users", json={"username": "Ada L."})).status == 400  # duplicate
    assert await (await client.get("/users")).json() == {"storage": "server", "users": {user_id: "Ada L."}}
    # the new user's own settings, apart from the default user's
    await client.post("/api/settings/Comfy.Locale", json="fr", headers={"comfy-user": user_id})
    assert await (await client.get("/api/settings", headers={"comfy-user": user_id})).json() == {"Comfy.Locale": "fr"}
    assert await (await client.get("/api/settings")).json() == {}
    assert (tmp_path / "user" / user_id / "comfy.settings.json").is_file()


@pytest.mark.parametrize("path", ["/api/settings", "/api/userdata?dir=workflows", "/api/userdata/a.json",
                                  "/api/v2/userdata"])
async def test_unknown_user_is_refused_naming_the_header(client, path):
    response = await client.get(path, headers={"comfy-user": "nobody"})
    assert response.status == 400
    assert "comfy-user" in (await response.json())["error"]


async def test_settings(client):
    assert await (await client.get("/api/settings")).json() == {}
    assert (await client.post("/api/settings", json={"Comfy.TutorialCompleted": True, "a": 1})).status == 200
    assert (await client.post("/api/settings/a", json={"nested": [1, 2]})).status == 200
    assert await (await client.get("/api/settings")).json() == {"Comfy.TutorialCompleted": True, "a": {"nested": [1, 2]}}
    assert await (await client.get("/api/settings/a")).json() == {"nested": [1, 2]}
    assert await (await client.get("/api/settings/unset")).json() is None
    for bad in ("[1, 2]", "{", ""):
        response = await client.post("/api/settings", data=bad)
        assert response.status == 400 and "settings" in (await response.json())["error"]
    assert (await client.post("/api/settings/a", data="{")).status == 400


async def test_userdata_write_read_list_move_delete(client):
    body = json.dumps({"nodes": []})
    written = await client.post("/api/userdata/workflows%2Fmine.json", data=body)
    assert written.status == 200 and await written.json() == "workflows/mine.json"
    assert await (await client.get("/api/userdata/workflows%2Fmine.json")).text() == body
    again = await client.post("/api/userdata/workflows%2Fmine.json?overwrite=false", data=body)
    assert again.status == 409
    info = await (await client.post("/api/userdata/workflows%2Fdeep%2Fb.json?full_info=true", data="{}")).json()
    assert info["path"] == "workflows/deep/b.json" and info["size"] == 2 and info["modified"] > 0
    listed = await (await client.get("/api/userdata", params={"dir": "workflows", "recurse": "true"})).json()
    assert listed == ["deep/b.json", "mine.json"]
    top = await (await client.get("/api/userdata", params={"dir": "workflows"})).json()
    assert top == ["mine.json"]
    split = await (await client.get("/api/userdata", params={"dir": "workflows", "recurse": "true",
                                                            "split": "true"})).json()
    assert split == [["deep/b.json", "deep", "b.json"], ["mine.json", "mine.json"]]
    full = await (await client.get("/api/userdata", params={"dir": "workflows", "recurse": "true",
                                                           "full_info": "true"})).json()
    assert [entry["path"] for entry in full] == ["deep/b.json", "mine.json"]
    v2 = await (await client.get("/api/v2/userdata", params={"path": "workflows"})).json()
    assert [(e["name"], e["path"], e["type"]) for e in v2] == [("deep", "workflows/deep", "directory"),
                                                             ("mine.json", "workflows/mine.json", "file")]
    assert v2[1]["size"] == len(body)
    root = await (await client.get("/api/v2/userdata")).json()
    assert {"workflows", "subgraphs", "user.css", "comfy.templates.json"} <= {e["name"] for e in root}

    moved = await client.post("/api/userdata/workflows%2Fmine.json/move/workflows%2Frenamed.json")
    assert moved.status == 200 and await moved.json() == "workflows/renamed.json"
    assert (await client.get("/api/userdata/workflows%2Fmine.json")).status == 404
    await client.post("/api/userdata/workflows%2Fmine.json", data="{}")
    clash = await client.post("/api/userdata/workflows%2Fmine.json/move/workflows%2Frenamed.json?overwrite=false")
    assert clash.status == 409
    assert (await client.post("/api/userdata/workflows%2Fnone.json/move/workflows%2Fx.json")).status == 404
    assert (await client.delete("/api/userdata/workflows%2Frenamed.json")).status == 204
    assert (await client.delete("/api/userdata/workflows%2Frenamed.json")).status == 404


async def test_userdata_missing_and_malformed(client):
    assert (await client.get("/api/userdata/nothing.json")).status == 404
    no_dir = await client.get("/api/userdata")
    assert no_dir.status == 400 and "dir" in (await no_dir.json())["error"]
    assert (await client.get("/api/userdata", params={"dir": "absent"})).status == 404
    assert (await client.get("/api/v2/userdata", params={"path": "absent"})).status == 404
    not_dir = await client.get("/api/v2/userdata", params={"path": "user.css"})
    assert not_dir.status == 400 and "not a directory" in (await not_dir.json())["error"]
    assert (await client.post("/api/userdata/workflows", data="{}")).status == 400  # a folder, not a file
    assert (await client.get("/api/userdata/a%00b")).status == 400
    under_a_file = await client.post("/api/userdata/user.css%2Fx.json", data="{}")
    assert under_a_file.status == 400 and "user.css/x.json" in (await under_a_file.json())["error"]
    await client.post("/api/userdata/a.json", data="{}")
    moved_under_a_file = await client.post("/api/userdata/a.json/move/user.css%2Fb.json")
    assert moved_under_a_file.status == 400 and "dest" in (await moved_under_a_file.json())["error"]


@pytest.mark.parametrize("name", ["..%2F..%2Fsecret.txt", "%2E%2E%2Fescape.json", "%252E%252E%252Fescape.json",
                                  "workflows%2F..%2F..%2Fescape.json", "%2Fetc%2Fpasswd"])
async def test_userdata_traversal_is_refused(client, tmp_path, name):
    assert (await client.get(f"/api/userdata/{name}")).status == 403
    assert (await client.post(f"/api/userdata/{name}", data="x")).status == 403
    assert (await client.delete(f"/api/userdata/{name}")).status == 403
    await client.post("/api/userdata/inside.json", data="{}")
    assert (await client.post(f"/api/userdata/inside.json/move/{name}")).status == 403
    assert not (tmp_path / "secret.txt").exists() and not (tmp_path / "escape.json").exists()


@pytest.mark.parametrize("query", [{"dir": "../"}, {"dir": "..%2F.."}, {"dir": "/etc"}])
async def test_userdata_listing_traversal_is_refused(client, query):
    assert (await client.get("/api/userdata", params=query)).status == 403
    assert (await client.get("/api/v2/userdata", params={"path": query["dir"]})).status == 403


async def test_oversize_userdata_is_refused(client):
    response = await client.post("/api/userdata/big.json", data=b"x" * 20_000)
    assert response.status == 413
    assert (await client.get("/api/userdata/big.json")).status == 404
