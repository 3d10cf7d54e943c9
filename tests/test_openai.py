"""The OpenAI-compatible boundary, driven by the official `openai` client against the real server
(uvicorn on 127.0.0.1) around a real TitleGenerator on the tiny model."""

import httpx
import pytest
from conftest import SERVER_KEY

openai = pytest.importorskip("openai")

ABSTRACT = "we propose a novel method for learning graph neural networks"
KEY = SERVER_KEY


@pytest.fixture
def client(tiny_server):
    return openai.OpenAI(base_url=tiny_server, api_key=KEY, max_retries=0)


def test_models_list(client, tiny_generator):
    assert [m.id for m in client.models.list()] == [tiny_generator.name] == ["run"]


def test_chat_completion_is_the_title_of_the_last_user_message(client, tiny_generator):
    reply = client.chat.completions.create(model="run", messages=[
        {"role": "system", "content": "You write titles."}, {"role": "user", "content": ABSTRACT}], max_tokens=6)
    assert reply.object == "chat.completion" and reply.model == "run"
    from chatgentitle.config import GenerationOptions

    assert reply.choices[0].message.content == tiny_generator([ABSTRACT], GenerationOptions(max_new_tokens=6))[0]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == tiny_generator.count_tokens(ABSTRACT, as_prompt=True)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    several = client.chat.completions.create(model="run", messages=[{"role": "user", "content": ABSTRACT}],
                                             n=3, max_tokens=6)
    titles = [c.message.content for c in several.choices]
    assert 1 <= len(titles) <= 3 and len(set(titles)) == len(titles)  # distinct candidates


def test_streaming_ends_with_done_and_carries_usage(client, tiny_server):
    chunks = list(client.chat.completions.create(
        model="run", messages=[{"role": "user", "content": ABSTRACT}], max_tokens=6, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    with httpx.stream("POST", f"{tiny_server}/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "run", "messages": [{"role": "user", "content": ABSTRACT}],
                            "stream": True}) as raw:
        lines = [line for line in raw.iter_lines() if line]
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_wrong_key_unknown_model_and_bad_bodies(tiny_server, client):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=tiny_server, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": ABSTRACT}])
    for bad in ({"messages": []}, {"messages": [{"role": "user", "content": "  "}]},
                {"messages": [{"role": "user", "content": ABSTRACT}], "n": 9},
                {"messages": [{"role": "user", "content": ABSTRACT}], "temperature": 5}):
        with pytest.raises(openai.UnprocessableEntityError):
            client.chat.completions.create(model="run", **bad)
    assert client.chat.completions.create(model="run", messages=[{"role": "user", "content": ABSTRACT}],
                                          max_tokens=4).choices  # still serving
