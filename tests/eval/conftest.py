import pytest
import torch
from eval_fixtures import char_tokenizer


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def tok():
    return char_tokenizer()
