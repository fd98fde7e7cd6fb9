"""The cache stage alone in a fresh process, for its peak memory.

  python -m bench.child FOLDER BOTTLENECK_DIR BACKBONE WEIGHTS

Prints one JSON line on stdout: seconds, photos, computed, peak_rss_bytes.
"""

import json
import sys

from bottleneck.run import cli  # pylint: disable=unused-import  (TF log level)
from bench import measure
from bottleneck import config
from bottleneck.features import backbones
from bottleneck.features import probe


def main(argv):
  folder, bottleneck_dir, name, weights = argv[1:]
  backbone = backbones.load_backbone(name, keras_weights=weights,
                                     layers=config.DEFAULT_LAYERS)
  # The settings retrain.py's defaults choose, measured here as a first run
  # measures them (a second would read them from machine.json).
  engine = probe.chooser(backbone, runtime='auto', batch_size=0,
                         bottleneck_dir=bottleneck_dir)
  seconds, _, result = measure.cache_stage(folder, backbone, bottleneck_dir,
                                           engine=None, choose=engine)
  print(json.dumps({'seconds': seconds, 'photos': len(result.photos),
                    'computed': result.computed,
                    'peak_rss_bytes': measure.peak_rss_bytes()}))


if __name__ == '__main__':
  main(sys.argv)
