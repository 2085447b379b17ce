"""Tiny fake copies of the eight segmentation benchmarks: two noise images per dataset, laid out
exactly like the real data on disk (folders, suffixes, split files), with random labels valid for
the dataset's classes."""
import os
import os.path as osp

import numpy as np
from PIL import Image


def _noise_image(rng, path):
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(path)


def _label_map(rng, path, num_labels, ignore=False, palette=False):
    """Random labels in [0, num_labels) (plus some 255 when the dataset has a void label)."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    labels = rng.integers(0, num_labels, (70, 90), dtype=np.uint8)
    if ignore:
        labels[rng.random((70, 90)) < 0.1] = 255
    img = Image.fromarray(labels, mode='L')
    if palette:  # VOC's SegmentationClass PNGs are indexed-colour images
        img = img.convert('P')
        img.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, i)])
    img.save(path)


def _split_file(path, ids):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(''.join(f'{i}\n' for i in ids))


def make_fake_dataset(name, root, seed=0):
    """Two images of ``name`` under ``root`` with the real dataset's relative layout."""
    rng = np.random.default_rng(seed)
    if name in ('voc21', 'voc20'):
        ids = ['2007_000033', '2007_000042']
        for i in ids:
            _noise_image(rng, osp.join(root, 'JPEGImages', f'{i}.jpg'))
            _label_map(rng, osp.join(root, 'SegmentationClass', f'{i}.png'), 21, ignore=True,
                       palette=True)
        _split_file(osp.join(root, 'ImageSets', 'Segmentation', 'val.txt'), ids)
    elif name in ('context60', 'context59'):
        ids = ['2008_000002', '2008_000023']
        for i in ids:
            _noise_image(rng, osp.join(root, 'JPEGImages', f'{i}.jpg'))
            _label_map(rng, osp.join(root, 'SegmentationClassContext', f'{i}.png'), 60)
        _split_file(osp.join(root, 'ImageSets', 'SegmentationContext', 'val.txt'), ids)
    elif name in ('coco_object', 'coco_stuff164k'):
        # a converted COCO-Stuff-164k folder holds the raw maps, mmseg's *_labelTrainIds.png and
        # (after cvt_coco_object.py) *_instanceTrainIds.png side by side
        for i in ['000000000139', '000000000285']:
            _noise_image(rng, osp.join(root, 'images', 'val2017', f'{i}.jpg'))
            ann = osp.join(root, 'annotations', 'val2017')
            _label_map(rng, osp.join(ann, f'{i}.png'), 182, ignore=True)
            _label_map(rng, osp.join(ann, f'{i}_labelTrainIds.png'), 171, ignore=True)
            _label_map(rng, osp.join(ann, f'{i}_instanceTrainIds.png'), 81)
    elif name == 'cityscapes':
        for i in ['frankfurt_000000_000294', 'lindau_000000_000019']:
            city = i.split('_')[0]
            _noise_image(rng, osp.join(root, 'leftImg8bit', 'val', city, f'{i}_leftImg8bit.png'))
            gt = osp.join(root, 'gtFine', 'val', city)
            _label_map(rng, osp.join(gt, f'{i}_gtFine_labelIds.png'), 34)
            _label_map(rng, osp.join(gt, f'{i}_gtFine_labelTrainIds.png'), 19, ignore=True)
    elif name == 'ade20k':
        for i in ['ADE_val_00000001', 'ADE_val_00000002']:
            _noise_image(rng, osp.join(root, 'images', 'validation', f'{i}.jpg'))
            _label_map(rng, osp.join(root, 'annotations', 'validation', f'{i}.png'), 151)
    else:
        raise KeyError(name)
