"""Exponential moving average of the generator weights, with torch_ema's (3950a7b) warm-up rule.

The shadow covers the parameters with requires_grad, in `parameters()` order, like torch_ema; so an
official `ema.pth` shadow list maps onto it by position and our own EMA files hold the same tensors by name.
"""
import torch

from utils.checkpoints import CheckpointError


class EMA:
    def __init__(self, module, decay):
        self.decay = float(decay)
        self.num_updates = 0
        self.names = [name for name, p in module.named_parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in module.parameters() if p.requires_grad]

    def effective_decay(self):
        """min(decay, (1 + n) / (10 + n)) with n the update count including the current one."""
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, module):
        self.num_updates += 1
        weight = 1.0 - self.effective_decay()
        params = [p.detach() for p in module.parameters() if p.requires_grad]
        # s <- s - (1 - d)(s - p) = lerp(s, p, 1 - d)
        torch._foreach_lerp_(self.shadow, params, weight)

    def state_dict_for(self, module):
        """A full state_dict of `module` with the EMA values in place of its trainable parameters."""
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        for name, value in zip(self.names, self.shadow):
            state[name] = value.detach().clone()
        return state

    @torch.no_grad()
    def load(self, shadow, num_updates, source):
        """Take shadow tensors (a list in parameter order) and the update count from a checkpoint."""
        if len(shadow) != len(self.shadow):
            raise CheckpointError(f"{source}: the EMA holds {len(shadow)} tensors but the generator has "
                                  f"{len(self.shadow)} trainable parameters")
        for index, (mine, theirs) in enumerate(zip(self.shadow, shadow)):
            if mine.shape != theirs.shape:
                raise CheckpointError(f"{source}: EMA tensor {index} ({self.names[index]}) has shape "
                                      f"{tuple(theirs.shape)}, the generator expects {tuple(mine.shape)}")
            mine.copy_(theirs.to(mine.device, mine.dtype))
        self.num_updates = int(num_updates)

    def shadow_from_state_dict(self, state_dict, source):
        """Our EMA file's full state_dict -> shadow list in parameter order."""
        missing = [name for name in self.names if name not in state_dict]
        if missing:
            raise CheckpointError(f"{source}: EMA state_dict lacks {missing[0]!r} ({len(missing)} missing)")
        return [state_dict[name] for name in self.names]

    def copy_to(self, module):
        """Write the EMA weights into `module` (e.g. a copy used for snapshots)."""
        with torch.no_grad():
            for param, value in zip((p for p in module.parameters() if p.requires_grad), self.shadow):
                param.copy_(value)
