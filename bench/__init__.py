"""``make bench``: podmigrate's live migration measured against the raw CRIU floor, in one run.

* ``bench.stats``     pure numbers: medians, ratios, durations from a PodMigration status, Prometheus text
* ``bench.report``    pure rendering: the tables, the summary line, the JSON document
* ``bench.floor``     a plain CRIU dump + restore of the same app, without Kubernetes, registry or images
* ``bench.migration`` the app as a pod on the local cluster, moved by a PodMigration
* ``bench.__main__``  brings a cluster up (instance 5), runs every size, prints, tears everything down
"""
