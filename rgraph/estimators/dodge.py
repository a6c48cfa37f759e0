class DODGE: pass
