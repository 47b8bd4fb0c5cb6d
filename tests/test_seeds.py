import pytest
import torch

from utils.seeds import latent_for_seed, parse_seeds


@pytest.mark.parametrize('text, expected', [
    ('0', [0]), ('0-3', [0, 1, 2, 3]), ('0,1,4-6', [0, 1, 4, 5, 6]), (' 7 , 2-3 ', [7, 2, 3]), ('5-5', [5]),
])
def test_parse_seeds(text, expected):
    assert parse_seeds(text) == expected


@pytest.mark.parametrize('text', ['', 'a', '1-', '-3', '3-1', '1,,2', '1.5', '0-x'])
def test_bad_seed_lists_name_the_item(text):
    with pytest.raises(ValueError, match='seed'):
        parse_seeds(text)


def test_latent_matches_the_global_seed_rule():
    torch.manual_seed(123)
    expected = torch.randn(1, 256)
    assert torch.equal(latent_for_seed(123, 256), expected)
