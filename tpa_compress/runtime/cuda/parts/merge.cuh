
    Merge& mg = *reinterpret_cast<Merge*>(&sh.z);
    if (t4 == 0 && g4 < G) { mg.m[w][g4] = m_i; mg.l[w][g4] = l_i; }
__MERGE_ACC__