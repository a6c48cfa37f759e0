class KFRTRL: pass
