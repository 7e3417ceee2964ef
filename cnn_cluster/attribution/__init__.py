"""Part B: the occlusion math in pure torch (``occlusion``), its fan-out over Ray actors
(``actors``) and the stage that maps a run's best trial (``stage``)."""
