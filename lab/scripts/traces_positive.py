# Frozen lab record: ran at commit 67c9393 (2026-12-06); kept as run, not maintained. See lab/README.md.
# Traces (issue 36), 2026-12-06, fifth question, asked after v31 shipped: can grid, ghost or noise enter
# the rule without a bias, by the positive part of their logit (they can raise a pixel where they flag
# it, never lower a photo whose map is flat, the failure that excluded their biased terms in the third
# study)? Same rule as traces_rules_robust.py on adq version 2's cached maps (data/cache/f27b, made by
# adq_recache.py): admissible on q70 / halved fit photos, then the best 5-fold CV F1 on the fit set.
# Result: adq alone 0.5148; + noise 0.5126 (its weight comes out negative, -0.30); + grid 0.5146;
# + ghost 0.5152 (+0.0004, a tie); all three 0.5126. Nothing adopted.
# Run: .venv/bin/python lab/scripts/traces_positive.py
"""Positive-part terms for grid, ghost and noise beside adq (lab script; see the header)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
sys.path.insert(0, str(Path(__file__).parent))
import traces_rules as tr, traces_rules_robust as rr
base=rr.features
def make(keep):
    def feats(d,i,form):
        cols=base(d,i,'D')  # adq llr only
        maps=d['maps'][i].astype(np.float32)/255.
        for t,name in enumerate(d['names']):
            if str(name) in keep and d['applies'][i,t]:
                cols[:,2*t]=0.0
                cols[:,2*t+1]=np.maximum(tr.logit(maps[t].ravel(),0.01),0.0)
        return cols
    return feats
tr.CACHE='data/cache/f27b'
d=tr.load('fit'); n=len(d['label']); folds=np.arange(n)%5
for keep in [(),('noise',),('grid',),('ghost',),('noise','grid','ghost')]:
    tr.features=make(keep)
    f1s=[]
    for k in range(5):
        beta=tr.fit(d,np.flatnonzero(folds!=k),'D'); f1s+=tr.scores(d,np.flatnonzero(folds==k),'D',beta)['f1s']
    beta=tr.fit(d,np.arange(n),'D')
    line=f"{keep}: CV {np.mean(f1s):.4f} beta {np.round(beta,3)}"
    for name in ['fitj70','fitr05']:
        e=tr.load(name); idx=np.arange(len(e['label']))
        a,b=tr.scores(e,idx,'D',None),tr.scores(e,idx,'D',beta)
        m,lo,hi=tr.paired(a['f1s'],b['f1s'])
        line+=f" | {name} {m:+.4f} [{lo:+.4f},{hi:+.4f}]"
    print(line, flush=True)
