"""Two gloo processes share one token store: the main process tokenises (main_process_first), the other only reads,
and the ranks' blocks are disjoint and together the one-process batch of twice the size."""

import os
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp
from data_fixtures import write_txt

pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo"),
    pytest.mark.skipif(sys.platform == "win32", reason="gloo test on POSIX only"),
]
STEPS, BATCH, BLOCK = 6, 2, 8


def _corpus(root):
    from langmoe.data.corpus import FolderCorpus

    return FolderCorpus(root, valid_frac=0.0, test_frac=0.0)


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from data_fixtures import char_tokenizer

    from langmoe.data.packing import pack_corpus
    from langmoe.data.parallel_tokenize import DocumentEncoder
    from langmoe.data.samplers import TemperatureSampler
    from langmoe.train.distributed import barrier, main_process_first

    if rank > 0:
        def refuse(self, texts):
            raise AssertionError("only the main process tokenises")
        DocumentEncoder.encode = refuse
    with main_process_first():
        blocks = pack_corpus(_corpus(f"{root}/corpus"), char_tokenizer(), ["en", "ru"], "train", BLOCK,
                             token_store=f"{root}/store", progress="off")
    sampler = TemperatureSampler(blocks, BATCH, seed=3)
    idx = [sampler.indices(step, 0, rank, world) for step in range(STEPS)]
    torch.save({"idx": idx, "rows": [blocks.batch(i)["input_ids"] for i in idx]}, f"{root}/rank{rank}.pt")
    barrier()
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_read_disjoint_blocks_of_one_store(tmp_path):
    from data_fixtures import char_tokenizer

    from langmoe.data.packing import pack_corpus
    from langmoe.data.samplers import TemperatureSampler
    from langmoe.data.token_store import TokenStore

    (tmp_path / "corpus").mkdir()
    write_txt(tmp_path / "corpus" / "en.txt", [("ab c" * (i % 7 + 3))[: 5 + i % 11] for i in range(60)])
    write_txt(tmp_path / "corpus" / "ru.txt", [("дé д" * (i % 5 + 2))[: 4 + i % 9] for i in range(50)])
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    blocks = pack_corpus(_corpus(tmp_path / "corpus"), char_tokenizer(), ["en", "ru"], "train", BLOCK,
                         progress="off")  # a fresh, temporary store
    one = TemperatureSampler(blocks, 2 * BATCH, seed=3)
    for step in range(STEPS):
        a, b = got[0]["idx"][step], got[1]["idx"][step]
        assert not set(a) & set(b)
        assert a + b == one.indices(step, 0)
        assert torch.equal(torch.cat([got[0]["rows"][step], got[1]["rows"][step]]), blocks.rows(a + b))
    store = TokenStore(tmp_path / "store", char_tokenizer(), progress="off")
    assert [len(store.state(lang, "train").shards) for lang in ("en", "ru")] == [1, 1]  # written once
