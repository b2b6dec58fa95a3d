"""Chat template rendering shared by backends that do not hold a transformers tokenizer (llama.cpp).

`render_chat` runs a Jinja chat template with transformers' own renderer (`render_jinja_template`: the same
sandboxed environment, filters and globals as `tokenizer.apply_chat_template`), so a GGUF's template gives the
same text in the llamacpp backend as the converted tokenizer gives in the hf backend.
"""

from __future__ import annotations


def render_chat(template: str, messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
                **special_tokens: str) -> str:
    """`messages` rendered by the Jinja chat `template`, ending with the assistant turn start by default.

    `special_tokens` (`bos_token`, `eos_token`, ...) are passed to the template as `apply_chat_template` does.
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                        add_generation_prompt=add_generation_prompt, **special_tokens)
    return str(rendered[0])
