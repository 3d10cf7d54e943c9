"""The OpenAI-compatible boundary, driven by the official `openai` client against the real server
(uvicorn on 127.0.0.1) around a real TitleGenerator on the tiny model."""

import json

import httpx
import pytest
from helpers import SERVER_KEY

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
    from chatgentitle.decoding.options import GenerationOptions

    assert reply.choices[0].message.content == tiny_generator([ABSTRACT], GenerationOptions(max_new_tokens=6),
                                                              "You write titles.")[0]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == tiny_generator.count_tokens(ABSTRACT, as_prompt=True)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    several = client.chat.completions.create(model="run", messages=[{"role": "user", "content": ABSTRACT}],
                                             n=3, max_tokens=6)
    titles = [c.message.content for c in several.choices]
    assert 1 <= len(titles) <= 3 and len(set(titles)) == len(titles)  # distinct candidates


def test_a_system_message_is_the_instruction(client, tiny_generator):
    """As in the exported GGUF's chat template (test_gguf) and the remote backend: the system message
    replaces the instruction of the prompt, token for token, so serve and in-process titles agree."""
    from chatgentitle.decoding.options import GenerationOptions

    options, instruction = GenerationOptions(max_new_tokens=6), "Write a short title for this abstract."
    reply = client.chat.completions.create(model="run", max_tokens=6, messages=[
        {"role": "system", "content": instruction}, {"role": "user", "content": ABSTRACT}])
    assert reply.choices[0].message.content == tiny_generator([ABSTRACT], options, instruction)[0]


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
    for path in ("/models", "/completions", "/chat/completions"):  # no key at all
        assert httpx.request("GET" if path == "/models" else "POST", tiny_server + path, json={}).status_code == 401
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": ABSTRACT}])
    for bad in ({"messages": []}, {"messages": [{"role": "user", "content": "  "}]},
                {"messages": [{"role": "user", "content": "\x1f"}]},
                {"messages": [{"role": "user", "content": ABSTRACT}], "n": 9},
                {"messages": [{"role": "user", "content": ABSTRACT}], "temperature": 5}):
        with pytest.raises(openai.UnprocessableEntityError):
            client.chat.completions.create(model="run", **bad)
    assert client.chat.completions.create(model="run", messages=[{"role": "user", "content": ABSTRACT}],
                                          max_tokens=4).choices  # still serving


def test_two_adapters_over_one_base_answer_as_two_models(run_dir, tiny_model_dir, tmp_path):
    from helpers import paper_row, serving

    from chatgentitle.decoding.options import GenerationOptions
    from chatgentitle.serving.app import create_app
    from chatgentitle.titling.generator import TitleGenerator
    from chatgentitle.training.config import TrainConfig
    from chatgentitle.training.loop import train

    data = tmp_path / "other.jsonl"  # other titles, more steps: another adapter on the same base
    data.write_text("".join(json.dumps({"title": "Quantum spectra of deep efficient transformer models",
                                        "abstract": paper_row(i)["abstract"]}) + "\n" for i in range(8)))
    other = train(TrainConfig(base_model=str(tiny_model_dir), data=str(data), output_dir=str(tmp_path / "other"),
                              batch_size=4, micro_batch_size=4, max_steps=8, learning_rate=1e-2, val_set_size=0,
                              cutoff_len=64, dtype="fp32", prompt_template="compact", save_steps=100))
    both = TitleGenerator.load_many({"first": run_dir, "second": other}, dtype="fp32")
    assert both[0].model is both[1].model  # one base in memory
    options = GenerationOptions(max_new_tokens=6)
    expected = {"first": TitleGenerator.load(run_dir, dtype="fp32")([ABSTRACT], options)[0],
                "second": TitleGenerator.load(other, dtype="fp32")([ABSTRACT], options)[0]}
    assert expected["first"] != expected["second"]
    with serving(create_app(both)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == ["first", "second"]
        for name in ("second", "first", "second"):  # switching back and forth
            reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": ABSTRACT}],
                                                   max_tokens=6)
            assert reply.choices[0].message.content == expected[name] and reply.model == name
        titles = httpx.post(url + "/v1/titles", json={"abstract": ABSTRACT, "model": "second",
                                                       "options": {"max_new_tokens": 6}}).json()
        assert titles["results"][0]["title"] == expected["second"] and titles["model"] == "second"
        assert httpx.post(url + "/v1/titles", json={"abstract": ABSTRACT, "model": "third"}).status_code == 404


def test_completions_continue_whole_prompts(client, tiny_generator, tiny_server):
    from chatgentitle.decoding.options import GenerationOptions
    from chatgentitle.titling.remote import RemoteTitles

    options = GenerationOptions(max_new_tokens=6)
    expected = tiny_generator([ABSTRACT, "quantum field theory"], options)
    prompts = [tiny_generator.template.render(a) for a in (ABSTRACT, "quantum field theory")]
    reply = client.completions.create(model="run", prompt=prompts, max_tokens=6)
    assert reply.object == "text_completion" and [c.text for c in reply.choices] == expected
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    chunks = list(client.completions.create(model="run", prompt=prompts[0], max_tokens=6, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected[0]
    # the remote backend's default (completions with our prompt) through our own server
    remote = RemoteTitles(tiny_server, "run", api_key=KEY, template=tiny_generator.template)
    assert [t[0] for t in remote.generate([ABSTRACT, "quantum field theory"], options)] == expected
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model="run", prompt=[], max_tokens=6)
