from .zero_shot import ZeroShotPixelTextHead

__all__ = ['ZeroShotPixelTextHead']
