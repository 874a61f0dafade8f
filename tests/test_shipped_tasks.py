"""The shipped classify tasks work out of the box (examples mode on the built-in model): plain
tickets written for this test, none of them among the tasks' examples, get their intent."""

from __future__ import annotations

import pytest

from workhorse.tasks.store import load_task

ENGLISH = [
    ("I paid for express shipping but want that money returned, the parcel came late", "refund"),
    ("please cancel the order I placed this morning", "cancel_order"),
    ("my order number is 88213, can you tell me where it is right now?", "track_order"),
    ("I typed the wrong street when ordering, it should be 4 Oak Road", "change_address"),
    ("checkout says my visa was declined even though it has funds", "payment_issue"),
    ("locked out of my account, the password reset link has expired", "account_access"),
    ("worst shopping experience ever, your staff ignored me for a week", "complaint"),
    ("do you have a store in Lisbon?", "other"),
]
CHINESE = [
    ("我付了加急运费但还是晚到了，这笔钱请退给我", "退款"),
    ("订单号88213现在到哪里了？", "查询物流"),
    ("下单时街道写错了，应该是橡树路4号", "修改地址"),
    ("账号被锁了，重置密码的链接也过期了", "账号登录"),
    ("你们的员工一个星期都不理我，太糟糕了", "投诉"),
    ("你们在上海有门店吗？", "其他"),
]


@pytest.mark.parametrize(("task", "tickets", "at_least"), [("support-intents", ENGLISH, 6), ("support-intents-zh", CHINESE, 4)])
def test_a_shipped_task_answers_plain_tickets(real_model_path, task, tickets, at_least):
    from workhorse.engine import Engine, EngineConfig, LlamaModel
    from workhorse.tasks.classify import make_classifier

    spec, _ = load_task(task)
    assert spec.classify.mode == "examples"
    examples = {text for texts in spec.examples_by_label().values() for text in texts}
    assert not examples & {text for text, _ in tickets}
    engine = Engine(LlamaModel(real_model_path(spec.model), name=spec.model), EngineConfig(n_slots=16))
    try:
        predictions = make_classifier(spec, None, engine).classify([text for text, _ in tickets])
    finally:
        engine.close()
    right = sum(p.label == label for p, (_, label) in zip(predictions, tickets))
    assert right >= at_least, [(label, p.label) for p, (_, label) in zip(predictions, tickets)]
